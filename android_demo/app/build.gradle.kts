// The demo app: Kotlin UI + onnxruntime-genai, and the pure-Java core (src/main/java/dev/edgestill/demo/core)
// that CI compiles and tests with a bare JDK (tests/android/).
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val genaiVersion: String = providers.gradleProperty("edgestill.genaiVersion").get()
val ortVersion: String = providers.gradleProperty("edgestill.ortVersion").get()
val genaiAar = file("libs/onnxruntime-genai-android-$genaiVersion.aar")

android {
    namespace = "dev.edgestill.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.edgestill.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
        buildConfigField("String", "GENAI_VERSION", "\"$genaiVersion\"")
        buildConfigField("String", "ORT_VERSION", "\"$ortVersion\"")
    }

    buildFeatures {
        buildConfig = true
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    kotlinOptions {
        jvmTarget = "17"
    }
}

dependencies {
    if (!genaiAar.isFile) {
        throw GradleException(
            "missing ${genaiAar.path}: run android_demo/fetch_genai_aar.sh (downloads onnxruntime-genai-android " +
                "$genaiVersion from its GitHub release), or put the AAR there by hand"
        )
    }
    implementation(files(genaiAar))
    implementation("com.microsoft.onnxruntime:onnxruntime-android:$ortVersion")
}
