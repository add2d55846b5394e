"""Jobs nobody submits by hand: watch folders, cron schedules and folder scans."""
