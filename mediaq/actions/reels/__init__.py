"""Cutting videos into scenes and clips, and reels of their best moments: extract_scenes,
generate_highlights, generate_digest, extract_clips, compile_random, compile_mega."""
