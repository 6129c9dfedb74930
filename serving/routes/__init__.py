"""The API's routes, a router per resource; ``serving.api.create_app`` mounts them all."""
