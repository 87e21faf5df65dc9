// Gradle build of the TideSync Android library (the AAR apps depend on). A single-module build:
// this directory is both the root project and the library module.
//
// Not run on the development machine (no Android SDK there, and Gradle cannot be downloaded):
// .github/workflows/android.yml builds the AAR and runs the emulator tests with it. The host-JVM
// tests of the same sources run with Maven (pom.xml, scripts/test-android.sh).
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

rootProject.name = "tidesync-android"
