"""The control API over aiohttp: envelope, answers, views, routes, OpenAPI, connections."""
