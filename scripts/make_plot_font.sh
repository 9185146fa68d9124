#!/bin/sh
# Subset DejaVu Sans (Debian package fonts-dejavu-core; free licence, see
# assets/DejaVuSans-LICENSE.txt) to Latin characters for the labels of `cpt plot`.
# Needs fonttools: pip install fonttools
set -eu
SRC=${1:-/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf}
cd "$(dirname "$0")/.."
pyftsubset "$SRC" --unicodes="U+0020-007E,U+00A0-017F,U+2010-2027,U+2030-205E,U+2212,U+00D7" \
  --layout-features='' --no-hinting --output-file=assets/DejaVuSans-subset.ttf
cp /usr/share/doc/fonts-dejavu-core/copyright assets/DejaVuSans-LICENSE.txt
