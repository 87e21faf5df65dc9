package dev.tidesync.android

import dev.tidesync.ErrorCode
import dev.tidesync.SourceResult
import dev.tidesync.TideSyncException
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

/** The outcome → WorkManager decision mapping and the outcome classification, on the plain JVM. */
class SyncPolicyTest {
    private val policy = SyncPolicy()

    private fun SyncDecision.error() = (this as SyncDecision.Failure).data[SyncData.KEY_ERROR]

    @Test
    fun synced_is_success_with_counts() {
        val d = policy.decide(synced()) as SyncDecision.Success
        assertArrayEquals(arrayOf("Product", "Customer"), d.data[SyncData.KEY_SOURCES] as Array<*>)
        assertEquals(420L, d.data[SyncData.KEY_OBJECTS_APPLIED])
        assertEquals(2L, d.data[SyncData.KEY_PUSHED])
        assertEquals(300L, d.data[SyncData.localObjectsKey("Product")])
        assertEquals(120L, d.data[SyncData.localObjectsKey("Customer")])
    }

    @Test
    fun network_server_5xx_unknown_status_stopped_and_busy_are_retried() {
        for (o in listOf(
            SyncOutcome.Network("connection refused"),
            SyncOutcome.Server(503, "unavailable"),
            SyncOutcome.Server(500, "boom"),
            SyncOutcome.Server(429, "slow down"),
            SyncOutcome.Server(null, "unknown status"),
            SyncOutcome.Stopped,
            SyncOutcome.Busy,
        )) {
            assertTrue("$o", policy.decide(o) is SyncDecision.Retry)
        }
    }

    @Test
    fun unauthorized_is_failure_saying_so() {
        val d = policy.decide(SyncOutcome.Unauthorized("session expired")) as SyncDecision.Failure
        assertEquals(SyncData.ERROR_UNAUTHORIZED, d.data[SyncData.KEY_ERROR])
        assertEquals("session expired", d.data[SyncData.KEY_DETAIL])
        assertEquals(SyncData.ERROR_NOT_LOGGED_IN, policy.decide(SyncOutcome.NotLoggedIn).error())
    }

    @Test
    fun client_errors_and_local_failures_are_not_retried() {
        assertEquals(SyncData.ERROR_SERVER, policy.decide(SyncOutcome.Server(404, "no such app")).error())
        assertEquals(SyncData.ERROR_PROTOCOL, policy.decide(SyncOutcome.Failed(SyncData.ERROR_PROTOCOL, "bad page")).error())
        assertEquals(SyncData.ERROR_STORAGE, policy.decide(SyncOutcome.Failed(SyncData.ERROR_STORAGE, "disk full")).error())
    }

    @Test
    fun retryable_outcome_gives_up_at_max_attempts() {
        val p = SyncPolicy(maxAttempts = 3)
        assertTrue(p.decide(SyncOutcome.Network("down"), runAttemptCount = 1) is SyncDecision.Retry)
        assertEquals(SyncData.ERROR_GAVE_UP, p.decide(SyncOutcome.Network("down"), runAttemptCount = 2).error())
        assertTrue(p.decide(synced(), runAttemptCount = 10) is SyncDecision.Success)
    }

    @Test
    fun long_server_detail_is_cut_to_fit_work_data() {
        val d = policy.decide(SyncOutcome.Unauthorized("x".repeat(50_000))) as SyncDecision.Failure
        assertTrue((d.data[SyncData.KEY_DETAIL] as String).length <= 1000)
    }

    private fun result(name: String, code: ErrorCode = ErrorCode.NONE, local: ULong = 0u) = SourceResult(
        name = name,
        ok = code == ErrorCode.NONE,
        pushed = 0u,
        pages = 1u,
        objectsApplied = local,
        localObjects = local,
        errorCode = code,
        errorMessage = if (code == ErrorCode.NONE) null else "failed",
    )

    @Test
    fun results_all_ok_are_synced_with_per_source_counts() {
        val o = SyncOutcomes.fromResults(listOf(result("Product", local = 300u), result("Customer", local = 120u)))
        assertEquals(
            SyncOutcome.Synced(listOf(SourceCount("Product", 300, 0, 300), SourceCount("Customer", 120, 0, 120))),
            o,
        )
    }

    @Test
    fun results_failure_the_app_must_act_on_wins_then_the_retryable_one() {
        val network = result("Product", ErrorCode.NETWORK)
        val unauthorized = result("Customer", ErrorCode.UNAUTHORIZED)
        val protocol = result("Order", ErrorCode.UNEXPECTED_SERVER_RESPONSE)
        assertTrue(SyncOutcomes.fromResults(listOf(network, unauthorized)) is SyncOutcome.Unauthorized)
        assertTrue(SyncOutcomes.fromResults(listOf(protocol, network)) is SyncOutcome.Network)
        assertEquals(SyncOutcome.NotLoggedIn, SyncOutcomes.fromResults(listOf(result("P", ErrorCode.CLIENT_NOT_LOGGED_IN))))
        assertEquals(SyncOutcome.Server(null, "P: failed"), SyncOutcomes.fromResults(listOf(result("P", ErrorCode.REMOTE_SERVER))))
        assertEquals(SyncOutcome.Stopped, SyncOutcomes.fromResults(listOf(result("P", ErrorCode.CANCELLED_BY_USER))))
        assertEquals(SyncOutcome.Failed(SyncData.ERROR_PROTOCOL, "Order: failed"), SyncOutcomes.fromResults(listOf(protocol)))
    }

    @Test
    fun untrusted_certificate_is_a_failure_not_a_retry() {
        val tls = SyncOutcomes.fromResults(listOf(result("Product", ErrorCode.TLS)))
        assertEquals(SyncOutcome.Failed(SyncData.ERROR_TLS, "Product: failed"), tls)
        val d = policy.decide(tls)
        assertTrue("$d", d is SyncDecision.Failure)
        assertEquals(SyncData.ERROR_TLS, (d as SyncDecision.Failure).data[SyncData.KEY_ERROR])
    }

    @Test
    fun refused_changes_still_count_as_synced_and_are_named() {
        val o = SyncOutcomes.fromResults(listOf(result("Product", local = 3u), result("Customer", ErrorCode.CUSTOM_SYNC_SERVER)))
        assertEquals(listOf("Customer"), (o as SyncOutcome.Synced).serverErrors)
        val d = policy.decide(o) as SyncDecision.Success
        assertArrayEquals(arrayOf("Customer"), d.data[SyncData.KEY_SERVER_ERRORS] as Array<*>)
    }

    @Test
    fun exceptions_map_to_typed_outcomes() {
        assertEquals(SyncOutcome.Network("reset"), SyncOutcomes.fromException(TideSyncException.Network("reset")))
        assertEquals(SyncOutcome.Server(502, "bad gateway"), SyncOutcomes.fromException(TideSyncException.Server(502u, "bad gateway")))
        assertEquals(SyncOutcome.Unauthorized("no"), SyncOutcomes.fromException(TideSyncException.Unauthorized("no")))
        assertEquals(SyncOutcome.Stopped, SyncOutcomes.fromException(TideSyncException.Stopped()))
        assertEquals(SyncOutcome.Busy, SyncOutcomes.fromException(TideSyncException.Busy()))
        assertEquals(SyncData.ERROR_CLOSED, (SyncOutcomes.fromException(TideSyncException.Closed()) as SyncOutcome.Failed).kind)
        assertEquals(SyncData.ERROR_PROTOCOL, (SyncOutcomes.fromException(TideSyncException.Protocol("x")) as SyncOutcome.Failed).kind)
    }

    @Test
    fun period_is_the_poll_interval_but_at_least_fifteen_minutes_and_zero_is_off() {
        assertEquals(null, SyncScheduler.periodMillis(0))
        assertEquals(15 * 60_000L, SyncScheduler.periodMillis(60))
        assertEquals(15 * 60_000L, SyncScheduler.periodMillis(15 * 60))
        assertEquals(60 * 60_000L, SyncScheduler.periodMillis(3600))
    }
}
