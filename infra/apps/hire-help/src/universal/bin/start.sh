#!/bin/sh
# Start hire-help: a static HTTP service on $PORT (default 10000, the article's port).
# GET / answers the version page, GET /health answers "ok".
set -eu
APP_HOME=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-10000}
echo "hire-help $(cat "$APP_HOME/VERSION" 2>/dev/null || echo unknown) listening on :$PORT (env ${PROJECT_ENV:-unset})"
exec httpd -f -v -p "$PORT" -h "$APP_HOME/share/www"
