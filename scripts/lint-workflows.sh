#!/usr/bin/env bash
# Lints the GitHub Actions workflows with actionlint (which passes every
# `run:` script through shellcheck too), then the repository's own shell
# scripts (.ci/run, scripts/*.sh) with shellcheck. Any finding fails.
#
# actionlint is not packaged by Debian 12, so it is built from the Go module
# proxy at a pinned version into $(go env GOPATH)/bin and reused from there on
# the next run. shellcheck comes from Debian; when it is missing it is
# installed with apt-get (as root, as .ci/run runs, or through passwordless
# sudo, as on GitHub's runners).
set -euo pipefail
cd "$(dirname "$0")/.."

ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

if ! command -v shellcheck >/dev/null; then
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
			sudo=(sudo)
		else
			echo "lint-workflows: shellcheck is missing; install it (apt-get install shellcheck)" >&2
			exit 1
		fi
	fi
	echo "lint-workflows: installing shellcheck from Debian's packages"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends shellcheck
fi

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
actionlint="$gobin/actionlint"
# -version prints the module version on its first line ("v1.7.12" or "1.7.12").
if ! [ -x "$actionlint" ] || [ "$("$actionlint" -version | head -n 1 | sed 's/^v//')" != "${ACTIONLINT_VERSION#v}" ]; then
	echo "lint-workflows: building actionlint $ACTIONLINT_VERSION"
	GOBIN="$gobin" go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if [ ${#workflows[@]} -eq 0 ]; then
	echo "lint-workflows: no workflow under .github/workflows" >&2
	exit 1
fi

echo "lint-workflows: actionlint $("$actionlint" -version | head -n 1) with $(shellcheck --version | sed -n 's/^version: /shellcheck /p') on ${#workflows[@]} workflows"
# -shellcheck names the binary explicitly: without one on PATH actionlint
# would silently skip the scripts instead of failing.
"$actionlint" -shellcheck "$(command -v shellcheck)" "${workflows[@]}"

scripts=(.ci/run scripts/*.sh)
echo "lint-workflows: shellcheck on ${scripts[*]}"
shellcheck "${scripts[@]}"
echo "lint-workflows: no findings"
