#!/usr/bin/env bash
# The Label Studio bridge's integration test starts a real Label Studio. Its dependencies
# clash with ours, so it lives in its own virtualenv (.venv-labelstudio), made once and
# reused; `make test` calls this.
set -euo pipefail
VENV="${LABEL_STUDIO_VENV:-.venv-labelstudio}"
VERSION="1.23.2"
# sentry-sdk 3.0.0 (which a fresh install took on 2026-12-07) refuses an option Label Studio 1.23.2 passes at start-up
# ("Unknown option 'send_default_pii'"): keep the 2.x line it was released with.
CONSTRAINTS="sentry-sdk<3"
STAMP="$VENV/.version-$VERSION-sentry2"
if [ -x "$VENV/bin/label-studio" ] && [ -f "$STAMP" ]; then exit 0; fi
echo "installing label-studio $VERSION into $VENV (once)" >&2
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "label-studio==$VERSION" "$CONSTRAINTS"
touch "$STAMP"
