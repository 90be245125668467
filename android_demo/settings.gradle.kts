// edgestill Android demo: one app module. Plugins and libraries come from Google's Maven
// (Android Gradle plugin) and Maven Central (Kotlin, onnxruntime-android); the
// onnxruntime-genai AAR is a file in app/libs/ (fetch_genai_aar.sh), see README.md.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "edgestill-demo"
include(":app")
