#!/usr/bin/env bash
# Downloads onnxruntime-genai's Android AAR into app/libs/ (it is a GitHub release asset of
# microsoft/onnxruntime-genai, not on Maven Central). Needs network access to github.com, which
# the edgestill development machines do not have: run it on your own computer.
#   android_demo/fetch_genai_aar.sh            # the version pinned in gradle.properties
#   android_demo/fetch_genai_aar.sh 0.18.0     # another release
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${1:-$(sed -n 's/^edgestill.genaiVersion=//p' "$here/gradle.properties")}"
out="$here/app/libs/onnxruntime-genai-android-$version.aar"
url="https://github.com/microsoft/onnxruntime-genai/releases/download/v$version/onnxruntime-genai-android-$version.aar"
# sha256 of the pinned release's AAR (21,570,052 bytes), as published with v0.15.2.
known_sha256_0_15_2="f507ddbf0f635554ab12fcbf7dcfb115981eb664b925d90f28ed598dd8eb2ee7"

if [[ -f "$out" ]]; then
    echo "already there: $out"
    exit 0
fi
mkdir -p "$(dirname "$out")"
echo "downloading $url"
if ! curl -fL --retry 3 -o "$out.partial" "$url"; then
    rm -f "$out.partial"
    echo "error: cannot download $url; check the version exists on https://github.com/microsoft/onnxruntime-genai/releases" >&2
    exit 2
fi
sum="$(sha256sum "$out.partial" | cut -d' ' -f1)"
if [[ "$version" == "0.15.2" && "$sum" != "$known_sha256_0_15_2" ]]; then
    rm -f "$out.partial"
    echo "error: $url has sha256 $sum, expected $known_sha256_0_15_2; not using it" >&2
    exit 2
fi
mv "$out.partial" "$out"
echo "saved $out (sha256 $sum)"
