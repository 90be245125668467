#!/usr/bin/env bash
# `make android`: builds the demo APK (app/build/outputs/apk/debug/app-debug.apk) where an
# Android SDK, Gradle >= 8.9 (or a ./gradlew) and the onnxruntime-genai AAR are present; otherwise
# says what is missing and exits 2. The edgestill development and CI machines have none of these
# (no access to Google's Maven or github.com), so there it always stops at the first check.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
missing() { echo "make android: $1" >&2; exit 2; }

command -v javac >/dev/null || missing "no JDK: install JDK 17 (e.g. apt-get install openjdk-17-jdk-headless)"

sdk="${ANDROID_HOME:-${ANDROID_SDK_ROOT:-}}"
if [[ -z "$sdk" && -f "$here/local.properties" ]]; then
    sdk="$(sed -n 's/^sdk.dir=//p' "$here/local.properties")"
fi
[[ -n "$sdk" && -d "$sdk" ]] || missing "no Android SDK: install one (Android Studio, or the command-line tools: sdkmanager \"platforms;android-35\" \"build-tools;35.0.0\") and set ANDROID_HOME, or write sdk.dir=... to android_demo/local.properties"
[[ -d "$sdk/platforms/android-35" ]] || missing "the Android SDK at $sdk has no platforms/android-35: run sdkmanager \"platforms;android-35\""

version="$(sed -n 's/^edgestill.genaiVersion=//p' "$here/gradle.properties")"
aar="$here/app/libs/onnxruntime-genai-android-$version.aar"
[[ -f "$aar" ]] || missing "no $aar: run android_demo/fetch_genai_aar.sh (needs github.com)"

if [[ -x "$here/gradlew" ]]; then
    gradle=("$here/gradlew")
elif command -v gradle >/dev/null; then
    gradle=(gradle)
    have="$(gradle --version 2>/dev/null | sed -n 's/^Gradle \([0-9.]*\).*/\1/p')"
    if [[ "$(printf '%s\n8.9\n' "$have" | sort -V | head -n1)" != "8.9" ]]; then
        missing "gradle $have is too old: the Android Gradle plugin 8.7.3 needs Gradle >= 8.9 (run \`gradle wrapper --gradle-version 8.9\` with a newer Gradle, or install one)"
    fi
else
    missing "no Gradle: install Gradle >= 8.9, or run \`gradle wrapper --gradle-version 8.9\` in android_demo/ once"
fi

ANDROID_HOME="$sdk" "${gradle[@]}" -p "$here" --no-daemon assembleDebug
echo "built $here/app/build/outputs/apk/debug/app-debug.apk"
