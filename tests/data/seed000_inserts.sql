-- Sample workflows, steps, jobs and step executions, kept exactly as first written:
-- the tests run them unchanged to show the schema still accepts them.
INSERT INTO workflow_definitions (id, workflow_code, workflow_name, description, workflow_type, input_types, output_types, default_priority, timeout_minutes, is_active) VALUES
(1, 'WF-VIDEO-TRANSCODE', 'Video Transcoding Pipeline', 'Transcode video to multiple formats and resolutions', 'video', 'video/mp4,video/avi,video/mov', 'video/mp4', 5, 120, TRUE),
(2, 'WF-IMAGE-PROCESS', 'Image Processing Pipeline', 'Resize, optimize, and generate thumbnails', 'image', 'image/jpeg,image/png', 'image/jpeg,image/png,image/webp', 3, 30, TRUE),
(3, 'WF-AUDIO-TRANSCODE', 'Audio Transcoding Pipeline', 'Convert audio and generate waveforms', 'audio', 'audio/wav,audio/flac', 'audio/mp3,audio/aac', 4, 45, TRUE),
(4, 'WF-DOC-PROCESS', 'Document Processing Pipeline', 'Extract text, generate thumbnails, convert formats', 'document', 'application/pdf,application/docx', 'application/pdf,text/plain', 4, 60, TRUE),
(5, 'WF-VIDEO-ANALYZE', 'Video Analysis Pipeline', 'Extract metadata, generate thumbnails, transcribe audio', 'video_analysis', 'video/mp4', 'application/json', 6, 180, TRUE);

INSERT INTO workflow_steps (id, workflow_id, step_number, step_name, step_type, action, parameters, timeout_seconds, on_failure) VALUES
-- Video Transcoding Pipeline
(1, 1, 1, 'Validate Input', 'validation', 'validate_video', '{"check_codec": true, "check_duration": true}', 30, 'stop'),
(2, 1, 2, 'Extract Metadata', 'extraction', 'extract_video_metadata', '{}', 60, 'continue'),
(3, 1, 3, 'Transcode 1080p', 'transcode', 'transcode_video', '{"resolution": "1080p", "codec": "h264"}', 1800, 'retry'),
(4, 1, 4, 'Transcode 720p', 'transcode', 'transcode_video', '{"resolution": "720p", "codec": "h264"}', 1200, 'retry'),
(5, 1, 5, 'Transcode 480p', 'transcode', 'transcode_video', '{"resolution": "480p", "codec": "h264"}', 600, 'retry'),
(6, 1, 6, 'Generate Thumbnails', 'thumbnail', 'generate_thumbnails', '{"count": 5, "format": "jpeg"}', 120, 'continue'),
(7, 1, 7, 'Finalize Output', 'finalization', 'finalize_job', '{}', 60, 'stop'),
-- Image Processing Pipeline
(8, 2, 1, 'Validate Image', 'validation', 'validate_image', '{}', 30, 'stop'),
(9, 2, 2, 'Resize Large', 'resize', 'resize_image', '{"max_dimension": 2000}', 60, 'retry'),
(10, 2, 3, 'Generate Thumbnail', 'thumbnail', 'create_thumbnail', '{"size": 300}', 30, 'continue'),
(11, 2, 4, 'Optimize', 'optimization', 'optimize_image', '{"quality": 85}', 60, 'retry'),
(12, 2, 5, 'Convert WebP', 'conversion', 'convert_format', '{"format": "webp"}', 45, 'continue');

INSERT INTO workflow_jobs (id, job_code, workflow_id, input_file_path, input_metadata, priority, status, current_step, progress_percent, submitted_by, submitted_at, started_at, completed_at) VALUES
(1, 'JOB-2024-001', 1, '/uploads/video1.mp4', '{"original_size_mb": 250, "duration_seconds": 600}', 5, 'completed', 7, 100.0, 'user_001', '2024-01-25 10:00:00', '2024-01-25 10:01:00', '2024-01-25 10:45:00'),
(2, 'JOB-2024-002', 1, '/uploads/video2.mov', '{"original_size_mb": 480, "duration_seconds": 1200}', 5, 'processing', 4, 57.0, 'user_002', '2024-01-25 11:00:00', '2024-01-25 11:02:00', NULL),
(3, 'JOB-2024-003', 2, '/uploads/image1.jpg', '{"width": 4000, "height": 3000}', 3, 'completed', 5, 100.0, 'user_001', '2024-01-25 11:30:00', '2024-01-25 11:30:30', '2024-01-25 11:32:00'),
(4, 'JOB-2024-004', 1, '/uploads/video3.avi', '{"original_size_mb": 120, "duration_seconds": 300}', 8, 'pending', 0, 0.0, 'user_003', '2024-01-25 12:00:00', NULL, NULL),
(5, 'JOB-2024-005', 2, '/uploads/image2.png', '{"width": 2000, "height": 1500}', 3, 'failed', 3, 40.0, 'user_002', '2024-01-25 12:30:00', '2024-01-25 12:30:15', NULL),
(6, 'JOB-2024-006', 5, '/uploads/video4.mp4', '{"original_size_mb": 350, "duration_seconds": 900}', 6, 'queued', 0, 0.0, 'user_001', '2024-01-25 13:00:00', NULL, NULL);
UPDATE workflow_jobs SET error_message = 'Image optimization failed: corrupt file header' WHERE id = 5;

INSERT INTO step_executions (id, job_id, step_id, status, started_at, completed_at, duration_seconds) VALUES
-- Job 1 (completed)
(1, 1, 1, 'completed', '2024-01-25 10:01:00', '2024-01-25 10:01:15', 15),
(2, 1, 2, 'completed', '2024-01-25 10:01:15', '2024-01-25 10:02:00', 45),
(3, 1, 3, 'completed', '2024-01-25 10:02:00', '2024-01-25 10:22:00', 1200),
(4, 1, 4, 'completed', '2024-01-25 10:22:00', '2024-01-25 10:35:00', 780),
(5, 1, 5, 'completed', '2024-01-25 10:35:00', '2024-01-25 10:42:00', 420),
(6, 1, 6, 'completed', '2024-01-25 10:42:00', '2024-01-25 10:44:00', 120),
(7, 1, 7, 'completed', '2024-01-25 10:44:00', '2024-01-25 10:45:00', 60),
-- Job 2 (processing)
(8, 2, 1, 'completed', '2024-01-25 11:02:00', '2024-01-25 11:02:20', 20),
(9, 2, 2, 'completed', '2024-01-25 11:02:20', '2024-01-25 11:03:30', 70),
(10, 2, 3, 'completed', '2024-01-25 11:03:30', '2024-01-25 11:33:30', 1800),
(11, 2, 4, 'running', '2024-01-25 11:33:30', NULL, NULL),
-- Job 3 (completed)
(12, 3, 8, 'completed', '2024-01-25 11:30:30', '2024-01-25 11:30:45', 15),
(13, 3, 9, 'completed', '2024-01-25 11:30:45', '2024-01-25 11:31:15', 30),
(14, 3, 10, 'completed', '2024-01-25 11:31:15', '2024-01-25 11:31:30', 15),
(15, 3, 11, 'completed', '2024-01-25 11:31:30', '2024-01-25 11:31:50', 20),
(16, 3, 12, 'completed', '2024-01-25 11:31:50', '2024-01-25 11:32:00', 10);

INSERT INTO media_queue (id, job_id, queue_name, priority, status, scheduled_time) VALUES
(1, 4, 'video_processing', 8, 'queued', '2024-01-25 12:00:00'),
(2, 6, 'video_analysis', 6, 'queued', '2024-01-25 13:00:00');
INSERT INTO workflow_notifications (id, job_id, notification_type, recipient, channel, subject, message, status, sent_at) VALUES
(1, 1, 'completion', 'user_001@company.com', 'email', 'Video Processing Complete', 'Your video video1.mp4 has been processed successfully.', 'sent', '2024-01-25 10:45:30'),
(2, 3, 'completion', 'user_001@company.com', 'email', 'Image Processing Complete', 'Your image image1.jpg has been processed.', 'sent', '2024-01-25 11:32:30'),
(3, 5, 'failure', 'user_002@company.com', 'email', 'Processing Failed', 'Image processing failed: corrupt file header', 'sent', '2024-01-25 12:35:00');
