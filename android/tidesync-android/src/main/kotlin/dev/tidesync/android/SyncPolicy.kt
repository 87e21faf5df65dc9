package dev.tidesync.android

/**
 * What a [SyncWorker] answers WorkManager, as plain data: [SyncWorker] maps it one to one to
 * `Result.success(data)`, `Result.retry()` and `Result.failure(data)`.
 */
sealed class SyncDecision {
    /** `Result.success(data)`: the counts of the pass. */
    data class Success(val data: Map<String, Any>) : SyncDecision()

    /** `Result.retry()`: WorkManager runs the work again after its (exponential) backoff. */
    data class Retry(val reason: String) : SyncDecision()

    /** `Result.failure(data)`: [SyncData.KEY_ERROR] says why; a retry would not help. */
    data class Failure(val data: Map<String, Any>) : SyncDecision()
}

/**
 * Keys and values of the worker's output and progress `Data`.
 *
 * Output on success: [KEY_SOURCES], [KEY_OBJECTS_APPLIED], [KEY_PUSHED], one
 * `KEY_LOCAL_OBJECTS_PREFIX + source` per source and, when the server refused changes,
 * [KEY_SERVER_ERRORS]. On failure: [KEY_ERROR] (one of the `ERROR_…` values) and [KEY_DETAIL].
 * Progress: [KEY_PROGRESS_SOURCE], [KEY_PROGRESS_DONE] and, when known, [KEY_PROGRESS_TOTAL].
 */
object SyncData {
    const val KEY_SOURCES = "sources"
    const val KEY_OBJECTS_APPLIED = "objects_applied"
    const val KEY_PUSHED = "pushed"
    const val KEY_LOCAL_OBJECTS_PREFIX = "local_objects."
    const val KEY_SERVER_ERRORS = "server_errors"
    const val KEY_ERROR = "error"
    const val KEY_DETAIL = "detail"
    const val KEY_PROGRESS_SOURCE = "progress_source"
    const val KEY_PROGRESS_DONE = "progress_done"
    const val KEY_PROGRESS_TOTAL = "progress_total"

    const val ERROR_UNAUTHORIZED = "unauthorized"
    const val ERROR_NOT_LOGGED_IN = "not_logged_in"
    const val ERROR_NOT_INITIALIZED = "not_initialized"
    const val ERROR_SERVER = "server"
    const val ERROR_PROTOCOL = "protocol"
    /** The server's certificate is not trusted (or the TLS handshake failed): not retried. */
    const val ERROR_TLS = "tls"
    const val ERROR_STORAGE = "storage"
    const val ERROR_CLOSED = "closed"
    const val ERROR_INVALID = "invalid"
    const val ERROR_SCHEMA_CHANGED = "schema_changed"
    const val ERROR_INTERNAL = "internal"
    const val ERROR_GAVE_UP = "gave_up"

    /** The key of [source]'s local object count in a success output. */
    fun localObjectsKey(source: String) = KEY_LOCAL_OBJECTS_PREFIX + source

    /** Progress as `Data` key-values. */
    fun progress(p: SyncProgress): Map<String, Any> = buildMap {
        put(KEY_PROGRESS_SOURCE, p.source)
        put(KEY_PROGRESS_DONE, p.done)
        p.total?.let { put(KEY_PROGRESS_TOTAL, it) }
    }
}

/**
 * Decides a WorkManager result from a [SyncOutcome]: a plain JVM class, tested without Android.
 *
 * - Synced → success with counts.
 * - Network, 5xx (and 408/429), a server error of unknown status, Stopped, Busy → retry: the
 *   failure is transient, WorkManager backs off exponentially and runs the work again (and only
 *   when the network constraint holds).
 * - Unauthorized, not logged in → failure saying so: the app must log the user in again; retrying
 *   with the same session would fail the same way.
 * - Other 4xx and the [SyncOutcome.Failed] kinds → failure: another attempt would not fix them.
 * - After [maxAttempts] runs of the same work a retryable outcome becomes failure
 *   ([SyncData.ERROR_GAVE_UP]); a periodic work still runs at its next period.
 */
class SyncPolicy(val maxAttempts: Int = DEFAULT_MAX_ATTEMPTS) {
    init {
        require(maxAttempts >= 1) { "maxAttempts must be at least 1, was $maxAttempts" }
    }

    /**
     * The decision for [outcome] of the [runAttemptCount]-th run (0 for the first, as
     * WorkManager's `runAttemptCount`).
     */
    fun decide(outcome: SyncOutcome, runAttemptCount: Int = 0): SyncDecision {
        val retryReason = when (outcome) {
            is SyncOutcome.Network -> "network: ${outcome.reason}"
            is SyncOutcome.Server ->
                if (outcome.status == null || isTransientStatus(outcome.status)) {
                    "server ${outcome.status ?: "error"}: ${outcome.detail}"
                } else {
                    return failure(SyncData.ERROR_SERVER, "HTTP ${outcome.status}: ${outcome.detail}")
                }
            SyncOutcome.Stopped -> "stopped"
            SyncOutcome.Busy -> "busy"
            is SyncOutcome.Synced -> return success(outcome)
            is SyncOutcome.Unauthorized -> return failure(SyncData.ERROR_UNAUTHORIZED, outcome.detail)
            SyncOutcome.NotLoggedIn -> return failure(SyncData.ERROR_NOT_LOGGED_IN, "log in first")
            is SyncOutcome.Failed -> return failure(outcome.kind, outcome.detail)
        }
        return if (runAttemptCount + 1 >= maxAttempts) {
            failure(SyncData.ERROR_GAVE_UP, "after ${runAttemptCount + 1} attempts: $retryReason")
        } else {
            SyncDecision.Retry(retryReason)
        }
    }

    private fun success(s: SyncOutcome.Synced): SyncDecision = SyncDecision.Success(
        buildMap {
            put(SyncData.KEY_SOURCES, s.sources.map { it.name }.toTypedArray())
            put(SyncData.KEY_OBJECTS_APPLIED, s.sources.sumOf { it.pulled })
            put(SyncData.KEY_PUSHED, s.sources.sumOf { it.pushed })
            for (c in s.sources) put(SyncData.localObjectsKey(c.name), c.localObjects)
            if (s.serverErrors.isNotEmpty()) put(SyncData.KEY_SERVER_ERRORS, s.serverErrors.toTypedArray())
        },
    )

    private fun failure(error: String, detail: String): SyncDecision =
        SyncDecision.Failure(mapOf(SyncData.KEY_ERROR to error, SyncData.KEY_DETAIL to detail.take(MAX_DETAIL)))

    companion object {
        /** Runs of one work before a retryable failure is given up (backoff 30 s doubling: ~2 h). */
        const val DEFAULT_MAX_ATTEMPTS = 8

        /** `Data` is limited to 10 KB: the server's body is cut to this many characters. */
        private const val MAX_DETAIL = 1000

        /** 5xx, 408 Request Timeout, 429 Too Many Requests: the server may answer later. */
        fun isTransientStatus(status: Int) = status >= 500 || status == 408 || status == 429
    }
}
