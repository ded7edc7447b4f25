"""The HTTP front end: a Falcon app over the site service, served by waitress on loopback."""
