"""The phone simulator: plays Twilio and a scripted caller against a running server.

Twilio's side of a media stream is one Sans-I/O protocol (``protocol.TwilioProtocol``),
moved over a socket by three legs: ``media.MediaLeg`` (a scenario's ``caller.Phone``),
``leg.TwilioLeg`` (code that drives its own caller) and ``lean.LeanLeg`` (hundreds of calls
from one load generator's tick loop). ``webhooks`` and ``twiml`` are Twilio's HTTP side,
``call`` its call engine, ``cli.simulate`` one whole call, ``load`` many. Stand-ins for the
rest of a call: ``vendors`` (Deepgram and ElevenLabs on loopback), ``text_speech`` and
``scripted`` (instant in-process speech and turns), ``process`` (``dialgraph serve`` processes).
"""
