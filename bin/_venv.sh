# Sourced by bin/run and bin/test: create .venv if missing and install a requirements file when it changed.
#
# A stamp in .venv holds the hash of what was last installed, so a second run skips pip entirely.
# requirements-dev.txt includes requirements.txt, so both files feed the dev stamp, and installing the dev
# set also stamps the runtime set.

keyward_python() {
    # The interpreter that creates .venv: $PYTHON, else python3.11, else python3 if it is 3.11 or newer.
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "Keyward needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)." >&2
    return 1
}

keyward_requirements_hash() {
    # The dev hash covers requirements.txt too, since requirements-dev.txt includes it with -r.
    { cat "$1"; [ "$1" = requirements.txt ] || cat requirements.txt; } | sha256sum | cut -d' ' -f1
}

keyward_venv() {
    # Usage: keyward_venv requirements.txt|requirements-dev.txt
    local requirements="$1" stamp=".venv/.installed-$1" want python
    if [ ! -x .venv/bin/python ]; then
        python="$(keyward_python)" || return 1
        echo "==> Creating .venv with $python"
        "$python" -m venv .venv || return 1
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip || return 1
    fi
    want="$(keyward_requirements_hash "$requirements")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "==> Installing $requirements into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements" || return 1
    echo "$want" >"$stamp"
    if [ "$requirements" = requirements-dev.txt ]; then
        keyward_requirements_hash requirements.txt >.venv/.installed-requirements.txt
    fi
}
