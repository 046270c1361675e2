"""The engine service: the loop, its commit path, the actions and the job facade."""
