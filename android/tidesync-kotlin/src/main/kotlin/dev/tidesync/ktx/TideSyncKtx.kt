package dev.tidesync.ktx

import dev.tidesync.Engine
import dev.tidesync.FindQuery
import dev.tidesync.ObjectListener
import dev.tidesync.ObjectNotification
import dev.tidesync.ObjectUpdate
import dev.tidesync.SearchResult
import dev.tidesync.SourceResult
import dev.tidesync.SyncListener
import dev.tidesync.SyncNotification
import dev.tidesync.SyncObject
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.withContext

/*
 * Idiomatic Kotlin over the generated bindings.
 *
 * - Every call that may touch the network or the disk has a `suspend` twin (`…Async`) running
 *   on Dispatchers.IO, never on the caller's thread. (Extensions cannot take the members' names:
 *   a member always wins.)
 * - Notifications are Flows built with callbackFlow; cancelling the collection cancels and
 *   closes the native handle. They arrive on the engine's notifier thread (a JNA-attached JVM
 *   thread, a different Thread object for each call: never rely on ThreadLocal in a listener).
 * - Lifetimes: Engine, SyncLock and NotificationHandle are AutoCloseable (`use {}`); keep one
 *   Engine per database for the app's lifetime, `shutdown()` then `close()` it.
 */

// ----- session and syncs -------------------------------------------------------------------

/** Signs in (see [Engine.login]); throws `TideSyncException.Unauthorized` when refused. */
suspend fun Engine.loginAsync(user: String, password: String) =
    withContext(Dispatchers.IO) { login(user, password) }

/** Signs out (see [Engine.logout]). */
suspend fun Engine.logoutAsync(wipe: Boolean = false) = withContext(Dispatchers.IO) { logout(wipe) }

/** Syncs every source and returns per-source results (see [Engine.syncAll]). */
suspend fun Engine.syncAllAsync(
    queryParams: String = "",
    onlyChangedSources: Boolean = false,
): List<SourceResult> = withContext(Dispatchers.IO) { syncAll(queryParams, onlyChangedSources) }

/** Syncs one source (see [Engine.syncSource]). */
suspend fun Engine.syncSourceAsync(name: String, queryParams: String = ""): SourceResult =
    withContext(Dispatchers.IO) { syncSource(name, queryParams) }

/** Pushes then pulls one source (see [Engine.pushChanges]). */
suspend fun Engine.pushChangesAsync(source: String): SourceResult =
    withContext(Dispatchers.IO) { pushChanges(source) }

/** Searches the server, stopping a running sync first (see [Engine.search]). */
suspend fun Engine.searchAsync(
    sources: List<String>,
    params: Map<String, String>,
    syncChanges: Boolean = false,
): List<SearchResult> = withContext(Dispatchers.IO) { search(sources, params, syncChanges) }

/** Stops the running sync and waits up to [waitMs] for it to end (see [Engine.stopSync]). */
suspend fun Engine.stopSyncAsync(waitMs: UInt = 10_000u): Boolean =
    withContext(Dispatchers.IO) { stopSync(waitMs) }

/**
 * Runs [block] while holding the sync mutex: no sync starts, a running one waits after its
 * current page. The lock is taken (waiting for the current page), held and released on one
 * Dispatchers.IO thread, so [block] is not a suspend function: do not wait for a blocking sync
 * inside it (the engine refuses that with `TideSyncException.InvalidArgument`).
 */
suspend fun <T> Engine.withSyncLock(block: () -> T): T = withContext(Dispatchers.IO) {
    syncLock().use { lock ->
        try {
            block()
        } finally {
            lock.release()
        }
    }
}

// ----- notifications -----------------------------------------------------------------------

/**
 * The notifications of [source] (`null`: the `*` listener, which gets run events and the events
 * of sources without a listener of their own). Collecting registers the listener (replacing the
 * previous one of that target), then calls [onRegistered] (start a sync there to miss
 * nothing); cancelling the collection removes it. A per-source Flow completes after its
 * source's final event, when the engine removes per-source listeners.
 */
fun Engine.notifications(source: String? = null, onRegistered: () -> Unit = {}): Flow<SyncNotification> =
    listen(source, start = onRegistered, isLast = { source != null && it.isFinal })

/**
 * Starts a sync of every source once the `*` listener is registered and emits its
 * notifications until the run event (`COMPLETE` or `CANCELLED`, `sourceName == null`), then
 * completes. A sync cancelled before it started emits nothing; combine with a timeout.
 */
fun Engine.syncFlow(queryParams: String = "", onlyChangedSources: Boolean = false): Flow<SyncNotification> =
    listen(null, start = { doSync(queryParams, onlyChangedSources) }, isLast = { it.sourceName == null })

/** Starts a sync of [name] once its listener is registered; completes after its final event. */
fun Engine.syncSourceFlow(name: String, queryParams: String = ""): Flow<SyncNotification> =
    listen(name, start = { doSyncSource(name, queryParams) }, isLast = { it.isFinal })

private fun Engine.listen(
    source: String?,
    start: () -> Unit,
    isLast: (SyncNotification) -> Boolean,
): Flow<SyncNotification> = callbackFlow {
    val handle = setNotification(source, object : SyncListener {
        override fun onNotification(notification: SyncNotification) {
            trySend(notification)
            if (isLast(notification)) channel.close()
        }
    })
    try {
        start()
    } catch (e: Exception) {
        handle.cancel()
        handle.close()
        throw e
    }
    awaitClose {
        handle.cancel()
        handle.close()
    }
}.buffer(Channel.UNLIMITED) // never block the notifier thread; the engine thins progress itself

/**
 * Changes of watched objects (see [Engine.addObjectNotify]). There is one object listener per
 * engine: collecting replaces it, cancelling clears it and every watch.
 */
fun Engine.objectNotifications(): Flow<ObjectNotification> = callbackFlow {
    setObjectNotify(object : ObjectListener {
        override fun onObjects(notification: ObjectNotification) {
            trySend(notification)
        }
    })
    awaitClose { runCatching { clearObjectNotify() } }
}.buffer(Channel.UNLIMITED)

// ----- local data --------------------------------------------------------------------------

/** Creates one object (see [Engine.create]). */
suspend fun Engine.createAsync(source: String, attributes: Map<String, String>): SyncObject =
    withContext(Dispatchers.IO) { create(source, attributes) }

/** Creates objects in one transaction and one call (see [Engine.createObjects]). */
suspend fun Engine.createObjectsAsync(source: String, items: List<Map<String, String>>): List<SyncObject> =
    withContext(Dispatchers.IO) { createObjects(source, items) }

/** The object [id] of [source], if any. */
suspend fun Engine.findAsync(source: String, id: String): SyncObject? =
    withContext(Dispatchers.IO) { find(source, id) }

/** Objects of [source] matching [query]. */
suspend fun Engine.findAllAsync(source: String, query: FindQuery = FindQuery()): List<SyncObject> =
    withContext(Dispatchers.IO) { findAll(source, query) }

/** Number of objects of [source] matching [query]. */
suspend fun Engine.countAsync(source: String, query: FindQuery = FindQuery()): ULong =
    withContext(Dispatchers.IO) { count(source, query) }

/** Sets attributes of several objects in one transaction (see [Engine.updateObjects]). */
suspend fun Engine.updateObjectsAsync(source: String, updates: List<ObjectUpdate>): List<SyncObject> =
    withContext(Dispatchers.IO) { updateObjects(source, updates) }

/** Deletes an object; false if it did not exist. */
suspend fun Engine.destroyAsync(source: String, id: String): Boolean =
    withContext(Dispatchers.IO) { destroy(source, id) }

/** Deletes the objects of [source] matching [query]; how many. */
suspend fun Engine.deleteAllAsync(source: String, query: FindQuery = FindQuery()): ULong =
    withContext(Dispatchers.IO) { deleteAll(source, query) }

/** A query with no condition: every object. */
fun emptyQuery(): FindQuery = FindQuery()
