"""Twilio's side of a call: the Media Streams codec and protocol, TwiML, REST call control."""
