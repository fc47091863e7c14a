#!/bin/sh
# Points Claude Code at a nexus proxy: sets ANTHROPIC_BASE_URL (and, if given, a key sent
# as "Authorization: Bearer") in ~/.claude/settings.json, keeping the settings already
# there. Served by nexus at /client-setup/setup.sh; see README.txt beside it.
#
#   sh setup.sh [NEXUS_URL] [CLIENT_KEY]
#   curl -fsSL http://NEXUS:3000/client-setup/setup.sh | sh -s -- http://NEXUS:3000 [KEY]
set -eu

url="${1:-${NEXUS_URL:-http://localhost:3000}}"
key="${2:-${NEXUS_CLIENT_KEY:-}}"
url="${url%/}"

case "$url" in
    http://*|https://*) ;;
    *) echo "setup.sh: the nexus URL must start with http:// or https:// (got: $url)" >&2; exit 2 ;;
esac
case "$url$key" in
    *'"'*|*'\'*|*' '*) echo "setup.sh: quotes, backslashes and spaces are not allowed in the URL or key" >&2; exit 2 ;;
esac

dir="${CLAUDE_CONFIG_DIR:-$HOME/.claude}"
file="$dir/settings.json"
mkdir -p "$dir"

if command -v python3 >/dev/null 2>&1; then
    python3 - "$file" "$url" "$key" <<'PY'
import json, os, sys
path, url, key = sys.argv[1:4]
try:
    with open(path) as f:
        settings = json.load(f)
except FileNotFoundError:
    settings = {}
env = settings.setdefault("env", {})
env["ANTHROPIC_BASE_URL"] = url
env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
if key:
    env["ANTHROPIC_AUTH_TOKEN"] = key
with open(path + ".tmp", "w") as f:
    json.dump(settings, f, indent=2)
    f.write("\n")
os.replace(path + ".tmp", path)
PY
elif command -v node >/dev/null 2>&1; then
    node - "$file" "$url" "$key" <<'JS'
const fs = require("fs");
const [path, url, key] = process.argv.slice(2);
let settings = {};
try { settings = JSON.parse(fs.readFileSync(path, "utf8")); } catch (e) { if (e.code !== "ENOENT") throw e; }
settings.env = settings.env || {};
settings.env.ANTHROPIC_BASE_URL = url;
settings.env.CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = "1";
if (key) settings.env.ANTHROPIC_AUTH_TOKEN = key;
fs.writeFileSync(path + ".tmp", JSON.stringify(settings, null, 2) + "\n");
fs.renameSync(path + ".tmp", path);
JS
elif [ ! -e "$file" ]; then
    auth=""
    [ -n "$key" ] && auth=",
    \"ANTHROPIC_AUTH_TOKEN\": \"$key\""
    printf '{\n  "env": {\n    "ANTHROPIC_BASE_URL": "%s",\n    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"%s\n  }\n}\n' "$url" "$auth" > "$file"
else
    echo "setup.sh: $file exists and neither python3 nor node is here to merge into it;" >&2
    echo "add to its \"env\" object: \"ANTHROPIC_BASE_URL\": \"$url\"" >&2
    exit 1
fi

echo "Claude Code now uses $url (settings: $file)."
