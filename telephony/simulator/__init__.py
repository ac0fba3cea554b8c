"""The phone simulator: plays Twilio and a scripted caller against a running server."""
