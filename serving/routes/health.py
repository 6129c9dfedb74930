"""Liveness and Prometheus metrics of the worker."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving.deps import Service, request_owner
from serving.schemas import HealthView

router = APIRouter(tags=["service"])


@router.get("/health", response_model=HealthView)
async def health(request: Request, service: Service) -> HealthView:
    """Liveness and what this worker runs (no key needed); never waits on Redis (the heartbeat's last result)."""
    redis_ok = service.registry.directory_ok
    return HealthView(
        status="ok" if redis_ok else "degraded",
        worker=service.worker_id,
        model=request.app.state.model_name,
        engine=service.config.engine.kind,
        sessions=len(service.hosted),
        directory="redis" if service.directory.shared else "local",
        directory_ok=redis_ok,
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, service: Service) -> Response:
    """Prometheus metrics of this worker (open to scrapers with ``server.metrics_open``, else a key is needed)."""
    if not service.config.server.metrics_open:
        request_owner(request)
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)
