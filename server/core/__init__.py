"""The ground floor: settings and flow config, database and migrations, models, the call store,
security (signatures, stream tokens), batched SQL writers, enums, and the call context and
turn events that telephony and graphs share. Imports nothing else of dialgraph's."""
