"""moto's server with one fidelity fix: DynamoDB calls are serialised.

Real DynamoDB evaluates a conditional write atomically per item; moto checks the condition and writes without a
lock, so two concurrent `attribute_not_exists(pk)` puts can both succeed under its threaded server. The
connector's idempotency claims and refresh lease rely on that atomicity, so every DynamoDB request runs under one
lock here (SQS long polls and the other services stay concurrent).

Usage: moto_server.py HOST PORT
"""

import sys
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

DYNAMODB_LOCK = threading.Lock()


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)

    def serialised(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            with DYNAMODB_LOCK:
                # Drain the response inside the lock so the write is complete before the next call runs.
                return [b"".join(app(environ, start_response))]
        return app(environ, start_response)

    run_simple(host, port, serialised, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
