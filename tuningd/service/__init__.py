"""The service: the engine's loop and commit path, its actions, and the job facade the API calls."""
