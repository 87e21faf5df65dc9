package dev.tidesync.ktx

import dev.tidesync.FindQuery
import dev.tidesync.SourceResult
import dev.tidesync.SyncObject
import dev.tidesync.TideSyncClient
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext

/**
 * Idiomatic Kotlin over the generated bindings: every call that may touch the network or the
 * disk is a `suspend` function running on [Dispatchers.IO], never on the caller's thread.
 */

/** Signs in (see [TideSyncClient.login]). */
suspend fun TideSyncClient.loginAsync(user: String, password: String) =
    withContext(Dispatchers.IO) { login(user, password) }

/** Syncs every source (see [TideSyncClient.syncAll]). */
suspend fun TideSyncClient.syncAllAsync(
    queryParams: String = "",
    onlyChangedSources: Boolean = false,
): List<SourceResult> = withContext(Dispatchers.IO) { syncAll(queryParams, onlyChangedSources) }

/** Objects of [source] matching [query]. */
suspend fun TideSyncClient.findAllAsync(source: String, query: FindQuery = emptyQuery()): List<SyncObject> =
    withContext(Dispatchers.IO) { findAll(source, query) }

/** A query with no condition: every object. */
fun emptyQuery(): FindQuery = FindQuery(
    conditions = emptyList(),
    matchAny = false,
    orderBy = emptyList(),
    descending = false,
    limit = null,
    offset = null,
    select = null,
)
