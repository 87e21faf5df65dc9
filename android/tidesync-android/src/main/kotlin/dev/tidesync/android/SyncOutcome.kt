package dev.tidesync.android

import dev.tidesync.ErrorCode
import dev.tidesync.SourceResult
import dev.tidesync.TideSyncException

/**
 * How one sync pass ended, in the engine's terms and without Android types: [SyncPolicy] turns it
 * into a WorkManager result, [SyncOutcomes] builds it from the engine's typed results.
 */
sealed class SyncOutcome {
    /**
     * Every source synced. [serverErrors] names the sources whose pages carried changes the
     * server refused (resolve them with `Engine.onSync…Error`; syncing again does not help).
     */
    data class Synced(val sources: List<SourceCount>, val serverErrors: List<String> = emptyList()) : SyncOutcome()

    /** No answer from the server (connection refused, timeout, dropped connection). */
    data class Network(val reason: String) : SyncOutcome()

    /** The server answered with an error status other than 401; [status] when known. */
    data class Server(val status: Int?, val detail: String) : SyncOutcome()

    /** HTTP 401: the session or the credentials were refused; the user must log in again. */
    data class Unauthorized(val detail: String) : SyncOutcome()

    /** No session: nobody logged in on this engine. */
    data object NotLoggedIn : SyncOutcome()

    /** The pass was stopped (`stopSync`, logout, shutdown) before it finished. */
    data object Stopped : SyncOutcome()

    /** Another sync held the engine and did not finish in time. */
    data object Busy : SyncOutcome()

    /**
     * A failure that another attempt will not fix by itself: [kind] is one of the `ERROR_…`
     * values of [SyncData] (protocol, tls, storage, closed, invalid, schema_changed, internal).
     */
    data class Failed(val kind: String, val detail: String) : SyncOutcome()
}

/** One source's figures after a pass (`SourceResult` without the error fields). */
data class SourceCount(val name: String, val pulled: Long, val pushed: Long, val localObjects: Long)

/** Progress of a pass, from the engine's notifications: [done] of [total] objects of [source]. */
data class SyncProgress(val source: String, val done: Long, val total: Long?)

/** Builds a [SyncOutcome] from what the generated `Engine` returns or throws. */
object SyncOutcomes {
    /**
     * The outcome of `Engine.syncAll()`'s per-source results. When sources fail differently,
     * the failure the app must act on wins, then the one a retry can fix: unauthorized, not
     * logged in, network, server, stopped, then any other failure.
     */
    fun fromResults(results: List<SourceResult>): SyncOutcome {
        val failed = results.filter { !it.ok && it.errorCode != ErrorCode.CUSTOM_SYNC_SERVER }
        fun firstWith(code: ErrorCode) = failed.firstOrNull { it.errorCode == code }
        fun message(r: SourceResult) = "${r.name}: ${r.errorMessage.orEmpty()}"

        firstWith(ErrorCode.UNAUTHORIZED)?.let { return SyncOutcome.Unauthorized(message(it)) }
        firstWith(ErrorCode.CLIENT_NOT_LOGGED_IN)?.let { return SyncOutcome.NotLoggedIn }
        firstWith(ErrorCode.NETWORK)?.let { return SyncOutcome.Network(message(it)) }
        // SourceResult carries the server's body but not the HTTP status: unknown (retried).
        firstWith(ErrorCode.REMOTE_SERVER)?.let { return SyncOutcome.Server(null, message(it)) }
        firstWith(ErrorCode.CANCELLED_BY_USER)?.let { return SyncOutcome.Stopped }
        failed.firstOrNull()?.let { return SyncOutcome.Failed(kindOf(it.errorCode), message(it)) }

        return SyncOutcome.Synced(
            sources = results.map {
                SourceCount(it.name, it.objectsApplied.toLong(), it.pushed.toLong(), it.localObjects.toLong())
            },
            serverErrors = results.filter { it.errorCode == ErrorCode.CUSTOM_SYNC_SERVER }.map { it.name },
        )
    }

    /** The outcome of a `TideSyncException` thrown by a sync call. */
    fun fromException(e: TideSyncException): SyncOutcome = when (e) {
        is TideSyncException.Network -> SyncOutcome.Network(e.reason)
        is TideSyncException.Unauthorized -> SyncOutcome.Unauthorized(e.detail)
        is TideSyncException.Server -> SyncOutcome.Server(e.status.toInt(), e.detail)
        is TideSyncException.Stopped -> SyncOutcome.Stopped
        is TideSyncException.Busy -> SyncOutcome.Busy
        is TideSyncException.Protocol -> SyncOutcome.Failed(SyncData.ERROR_PROTOCOL, e.reason)
        is TideSyncException.Tls -> SyncOutcome.Failed(SyncData.ERROR_TLS, e.reason)
        // A corrupt or mismatched bulk file changed nothing; the next attempt asks for a new one.
        is TideSyncException.BulkFile -> SyncOutcome.Server(null, "bulk file: ${e.reason}")
        is TideSyncException.Storage -> SyncOutcome.Failed(SyncData.ERROR_STORAGE, e.reason)
        is TideSyncException.Closed -> SyncOutcome.Failed(SyncData.ERROR_CLOSED, e.message.orEmpty())
        is TideSyncException.InvalidArgument -> SyncOutcome.Failed(SyncData.ERROR_INVALID, e.reason)
        is TideSyncException.NotFound -> SyncOutcome.Failed(SyncData.ERROR_INVALID, e.what)
        is TideSyncException.SchemaChanged -> SyncOutcome.Failed(SyncData.ERROR_SCHEMA_CHANGED, e.message.orEmpty())
        // Internal, and any variant added to the API later: not retried until mapped here.
        else -> SyncOutcome.Failed(SyncData.ERROR_INTERNAL, e.message ?: e.javaClass.simpleName)
    }

    private fun kindOf(code: ErrorCode): String = when (code) {
        ErrorCode.UNEXPECTED_SERVER_RESPONSE -> SyncData.ERROR_PROTOCOL
        ErrorCode.TLS -> SyncData.ERROR_TLS
        ErrorCode.STORAGE -> SyncData.ERROR_STORAGE
        ErrorCode.INVALID_INPUT -> SyncData.ERROR_INVALID
        else -> SyncData.ERROR_INTERNAL // RUNTIME: unknown source, busy or closed (the code does not say which)
    }
}
