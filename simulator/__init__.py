"""The bundled contact-center API simulator (demo, tests, local development): `server`
(aiohttp), `state`, one module a stand-in API, and `command` (`followup simulator`)."""
