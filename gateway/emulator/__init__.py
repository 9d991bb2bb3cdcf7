"""Built-in stand-in for the Orga realtime API: strict REST validation and a listening agent."""
