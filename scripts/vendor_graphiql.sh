#!/usr/bin/env bash
# Re-vendors GraphiQL's browser files into levqor/http/static/graphiql/ from the npm registry, so that
# /graphql works with no internet (issue 14, item 4). Installing Levqor never runs this: the files are
# committed and ship as package data. Needs npm; run from anywhere, then commit the result.
#
#   scripts/vendor_graphiql.sh
#
# The versions are the ones Strawberry's own GraphiQL page loads (strawberry/static/graphiql.html):
# change them together, and check the page in the browser test (tests/e2e/test_graphiql_browser.py).
set -euo pipefail

GRAPHIQL=3.8.3
REACT=18.2.0
EXPLORER=1.0.2           # @graphiql/plugin-explorer
EXPLORER_BUNDLES=0.9.0   # graphiql-explorer, bundled inside the explorer plugin's UMD file

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/levqor/http/static/graphiql"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

unpack() {  # unpack PACKAGE@VERSION DIR: the package's tarball, unpacked into $work/DIR
  local tarball
  tarball="$(cd "$work" && npm pack --silent "$1")"
  mkdir -p "$work/$2"
  tar -xzf "$work/$tarball" -C "$work/$2" --strip-components=1
}

unpack "graphiql@$GRAPHIQL" graphiql
unpack "react@$REACT" react
unpack "react-dom@$REACT" react-dom
unpack "@graphiql/plugin-explorer@$EXPLORER" plugin-explorer
unpack "graphiql-explorer@$EXPLORER_BUNDLES" graphiql-explorer

rm -rf "$dest"
mkdir -p "$dest/LICENSES"
# package-dir  file-in-package  vendored-name  package@version  licence
files=(
  "react umd/react.production.min.js react.production.min.js react@$REACT MIT"
  "react-dom umd/react-dom.production.min.js react-dom.production.min.js react-dom@$REACT MIT"
  "graphiql graphiql.min.js graphiql.min.js graphiql@$GRAPHIQL MIT"
  "graphiql graphiql.min.css graphiql.min.css graphiql@$GRAPHIQL MIT"
  "plugin-explorer dist/index.umd.js plugin-explorer.umd.js @graphiql/plugin-explorer@$EXPLORER MIT"
  "plugin-explorer dist/style.css plugin-explorer.css @graphiql/plugin-explorer@$EXPLORER MIT"
)
rows=""
for entry in "${files[@]}"; do
  read -r dir file name package licence <<<"$entry"
  cp "$work/$dir/$file" "$dest/$name"
  digest="$(sha256sum "$dest/$name" | cut -d' ' -f1)"
  rows+="| \`$name\` | \`$package\` | \`$file\` | $licence | \`${digest:0:16}…\` |"$'\n'
done

cp "$work/react/LICENSE" "$dest/LICENSES/react.txt"            # react and react-dom share it
cp "$work/graphiql/LICENSE" "$dest/LICENSES/graphiql.txt"      # graphiql and its plugins' repository
cp "$work/graphiql-explorer/LICENSE" "$dest/LICENSES/graphiql-explorer.txt"

# The dependencies webpack put inside graphiql.min.js, read from its module paths.
bundled="$(grep -o '"\.\./\.\./\.\./node_modules/[^"]*' "$dest/graphiql.min.js" \
  | sed 's|"../../../node_modules/||' \
  | awk -F/ '{ if ($1 ~ /^@/) print $1 "/" $2; else print $1 }' | sort -u | sed 's/.*/`&`/' | paste -sd, - \
  | sed 's/,/, /g')"

cat >"$dest/README.md" <<EOF
# GraphiQL's browser files, vendored

Levqor serves these at \`/graphql/assets/graphiql/\` for the GraphiQL page at \`/graphql\`, so the page
needs no CDN and no internet (issue 14, item 4). They are copied unchanged from the npm registry's
packages by \`scripts/vendor_graphiql.sh\`, which wrote this file; do not edit them by hand.

| file | package | path in the package | licence | sha256 |
| --- | --- | --- | --- | --- |
$rows
Licence texts, in \`LICENSES/\`:

- \`react.txt\`: \`react\` and \`react-dom\` $REACT (MIT, Facebook, Inc. and its affiliates).
- \`graphiql.txt\`: \`graphiql\` $GRAPHIQL and \`@graphiql/plugin-explorer\` $EXPLORER, from the same
  repository (MIT, GraphQL Contributors); the plugin's package ships no licence file of its own.
- \`graphiql-explorer.txt\`: \`graphiql-explorer\` $EXPLORER_BUNDLES, which the plugin's UMD file bundles (MIT).

\`graphiql.min.js\` is GraphiQL's own UMD build, which bundles its dependencies: $bundled.
EOF

echo "vendored into $dest:"
ls -l "$dest"
