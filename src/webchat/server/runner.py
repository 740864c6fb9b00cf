"""Running the app under uvicorn with a shutdown that lets every stream finish.

uvicorn's own shutdown closes every WebSocket first and only then runs the application's
shutdown, so the frames of runs cancelled by the shutdown (their ``run.cancelled``) would reach
storage but no client. ``DrainingServer`` stops accepting connections, drains the service
(see ``ChatService.drain``: every client gets its run's terminal frame, then close 1012),
and then lets uvicorn finish as usual.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG

from webchat.server.ws import MAX_MESSAGE_BYTES

log = logging.getLogger("webchat.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.webchat_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections while draining; uvicorn closes them again
        service = getattr(self.webchat_app.state, "service", None)
        if service is not None and not self.force_exit:
            log.info("draining: ending runs and sending their last frames to every client")
            try:
                await service.drain()
            except Exception:
                log.exception("drain failed; shutting down anyway")
        await super().shutdown(sockets)


def serve(
    app: FastAPI,
    *,
    host: str,
    port: int,
    log_level: str,
    log_config: dict[str, Any] | None = None,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then drain and stop. ``log_config``: a
    ``logging.config.dictConfig`` for uvicorn's loggers (default: uvicorn's own)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config if log_config is not None else LOGGING_CONFIG,
        timeout_graceful_shutdown=10,
        ws_max_size=MAX_MESSAGE_BYTES,  # a larger client message is refused as it arrives
        # The app decides whom to believe about forwarding (--trusted-proxies): uvicorn must
        # not replace the peer address with a header first.
        proxy_headers=False,
    )
    DrainingServer(config, app).run()
