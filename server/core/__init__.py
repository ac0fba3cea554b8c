"""The ground floor: settings, database, models, stores, security. Imports nothing else of dialgraph's."""
