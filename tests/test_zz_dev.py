import json, time
from pathlib import Path
from tests.helpers import MediaqEnv
from tests.test_web_api import start_web
from tests.test_dashboard_views import MEDIA_WORKFLOW, FILL, make_source

def test_dev(mq: MediaqEnv) -> None:
    mq.apply_workflow(MEDIA_WORKFLOW)
    code = mq.submit("WF-DASH-MEDIA", make_source(mq.inputs / "clip.mp4"))
    mq.run_burst(timeout=300)
    with mq.connect() as conn:
        conn.execute(FILL)
    web = start_web(mq)
    Path("/tmp/dashdev.json").write_text(json.dumps({"base": web.base, "tokens": web.tokens, "code": code, "url": mq.url}))
    time.sleep(3000)
