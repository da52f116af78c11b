#!/bin/sh
# Check the deploy files with the tools an operator has: nginx -t on the nginx snippet,
# webhook mode behind that snippet end to end (deploy/verify_webhook.py), systemd-analyze on
# the unit, the compose file through docker compose (or docker-compose), and `docker build`
# and the container end to end (deploy/verify_container.py) when a Docker engine answers. Run from the repository root:
#   sh deploy/verify.sh
# Each check prints the tool's version and "ok" or the tool's complaint; a missing tool is
# reported as "skipped", never as ok. Exit status: the number of failed checks.
# Touches nothing outside a temporary folder (nginx runs only `-t`; no unit is installed).
set -u
cd "$(dirname "$0")/.." || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { echo "ok: $1"; }
bad() { echo "FAILED: $1"; failed=$((failed + 1)); }
skip() { echo "skipped: $1"; }

# -- nginx: the snippet inside a minimal http {} block, with a throw-away certificate
if command -v nginx >/dev/null 2>&1; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bot.example.com \
        -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1
    mkdir -p "$tmp/logs"
    sed -e "s#/etc/letsencrypt/live/bot.example.com/fullchain.pem#$tmp/cert.pem#" \
        -e "s#/etc/letsencrypt/live/bot.example.com/privkey.pem#$tmp/key.pem#" \
        -e "s#/var/log/nginx/#$tmp/logs/#" deploy/nginx-webhook.conf > "$tmp/site.conf"
    printf 'pid %s/nginx.pid;\nerror_log %s/logs/error.log;\nevents {}\nhttp { include %s/site.conf; }\n' \
        "$tmp" "$tmp" "$tmp" > "$tmp/nginx.conf"
    if nginx -t -c "$tmp/nginx.conf" 2>"$tmp/nginx.out"; then
        ok "$(nginx -v 2>&1): deploy/nginx-webhook.conf"
    else
        cat "$tmp/nginx.out"; bad "$(nginx -v 2>&1): deploy/nginx-webhook.conf"
    fi
    # the two-instance snippet: the compose service names swapped for addresses nginx -t can resolve
    sed -e "s#/etc/letsencrypt/live/bot.example.com/fullchain.pem#$tmp/cert.pem#" \
        -e "s#/etc/letsencrypt/live/bot.example.com/privkey.pem#$tmp/key.pem#" \
        -e "s#/var/log/nginx/#$tmp/logs/#" -e "s#bot\([0-9]\):8080#127.0.0.1:1808\1#g" \
        deploy/nginx-multi.conf > "$tmp/site.conf"
    if nginx -t -c "$tmp/nginx.conf" 2>"$tmp/nginx.out"; then
        ok "$(nginx -v 2>&1): deploy/nginx-multi.conf"
    else
        cat "$tmp/nginx.out"; bad "$(nginx -v 2>&1): deploy/nginx-multi.conf"
    fi
else
    skip "nginx not installed (apt-get install nginx)"
fi

# -- nginx for real: webhook mode behind the snippet, end to end (python -m bot run --webhook)
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && py=${PYTHON:-.venv/bin/python}
if command -v nginx >/dev/null 2>&1 && "$py" -c "import aiohttp, telegram" >/dev/null 2>&1; then
    if "$py" deploy/verify_webhook.py; then ok "webhook behind nginx, end to end"
    else bad "deploy/verify_webhook.py"; fi
else
    skip "webhook behind nginx (needs nginx and the bot installed: pip install -e '.[dev]')"
fi

# -- systemd: verify the unit (the ExecStart= interpreter swapped for one that exists here)
if command -v systemd-analyze >/dev/null 2>&1; then
    python=$(command -v python3)
    sed "s#/opt/backup-bot/.venv/bin/python#$python#" deploy/backup-bot.service > "$tmp/backup-bot.service"
    version=$(systemd-analyze --version | head -n 1)
    if systemd-analyze verify "$tmp/backup-bot.service"; then
        ok "$version: systemd-analyze verify deploy/backup-bot.service"
    else
        bad "$version: systemd-analyze verify deploy/backup-bot.service"
    fi
    systemd-analyze security --offline=true "$tmp/backup-bot.service" 2>/dev/null | tail -n 1
else
    skip "systemd-analyze not installed"
fi

# -- compose: parse and resolve the file (needs the env file it names)
env_file=/etc/backup-bot/bot.env
if docker compose version >/dev/null 2>&1; then compose="docker compose"
elif command -v docker-compose >/dev/null 2>&1; then compose="docker-compose"
else compose=""; fi
if [ -n "$compose" ]; then
    sed "s#$env_file#$PWD/deploy/bot.env.example#" deploy/compose.yaml > deploy/.compose-verify.yaml
    if $compose -f deploy/.compose-verify.yaml config >/dev/null; then
        ok "$($compose version | head -n 1): deploy/compose.yaml"
    else
        bad "$compose config deploy/compose.yaml"
    fi
    rm -f deploy/.compose-verify.yaml
    sed "s#$env_file#$PWD/deploy/bot.env.example#" deploy/compose.multi.yaml > deploy/.compose-verify.yaml
    if POSTGRES_PASSWORD=verify $compose -f deploy/.compose-verify.yaml config >/dev/null; then
        ok "$($compose version | head -n 1): deploy/compose.multi.yaml"
    else
        bad "$compose config deploy/compose.multi.yaml"
    fi
    rm -f deploy/.compose-verify.yaml
else
    skip "neither docker compose nor docker-compose installed"
fi

# -- the image: only with a running Docker engine (and the base image reachable); then the
#    container against a fake Telegram (deploy/verify_container.py)
if docker info >/dev/null 2>&1; then
    if docker build -q -f deploy/Dockerfile -t backup-bot:verify . >/dev/null; then
        ok "$(docker version --format 'Docker engine {{.Server.Version}}'): docker build"
        if "$py" deploy/verify_container.py backup-bot:verify --engine docker; then ok "the container, end to end"
        else bad "deploy/verify_container.py"; fi
    else
        bad "docker build -f deploy/Dockerfile"
    fi
else
    skip "no Docker engine answers (docker info): the image was not built"
fi

exit "$failed"
