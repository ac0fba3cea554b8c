"""One call's pipeline: session, reply, turn policy, playback tracking, pacing, call log."""
