package dev.tidesync

import org.junit.jupiter.api.Tag
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir
import java.nio.file.Path
import java.util.concurrent.atomic.AtomicLong

/**
 * Benchmarks, not timed tests: they print figures and assert nothing about speed. Excluded by
 * default; run them with `scripts/test-kotlin.sh --bench`.
 */
@Tag("bench")
class BenchTest {
    @TempDir
    lateinit var dir: Path

    private fun median(xs: List<Double>) = xs.sorted()[xs.size / 2]

    private fun report(what: String, perItemUs: List<Double>, unit: String) {
        println(
            "BENCH %-58s median %8.2f µs/%s  (min %.2f, max %.2f, %d rounds)".format(
                what, median(perItemUs), unit, perItemUs.min(), perItemUs.max(), perItemUs.size,
            ),
        )
    }

    private fun notification(serverErrors: Int): SyncNotification = SyncNotification(
        sourceId = 1,
        sourceName = "Product",
        syncType = SyncType.INCREMENTAL,
        status = if (serverErrors == 0) SyncStatus.IN_PROGRESS else SyncStatus.ERROR,
        isFinal = false,
        totalCount = 300uL,
        processedCount = 50uL,
        cumulativeCount = 100uL,
        errorCode = if (serverErrors == 0) ErrorCode.NONE else ErrorCode.CUSTOM_SYNC_SERVER,
        errorMessage = "",
        serverErrors = List(serverErrors) {
            ServerError("create", "tmp-$it", "Product name 'error' is not allowed", mapOf("name" to "error"), null)
        },
        outcomes = emptyList(),
        bulkStatus = null,
        partition = null,
    )

    @Test
    fun aNotificationCrossingIntoKotlin() {
        val seen = AtomicLong()
        val listener = object : SyncListener {
            override fun onNotification(notification: SyncNotification) {
                seen.addAndGet(notification.cumulativeCount.toLong())
            }
        }
        for ((label, n) in listOf(
            "notification Rust thread -> Kotlin listener (in_progress)" to notification(0),
            "notification Rust thread -> Kotlin listener (10 server errors)" to notification(10),
        )) {
            measureListener(listener, n, 20_000u) // warm-up: JIT, JNA
            val count = 20_000u
            val rounds = (1..7).map { measureListener(listener, n, count).toDouble() / 1000.0 / count.toDouble() }
            report(label, rounds, "event")
        }
        check(seen.get() > 0)
    }

    @Test
    fun aRealSyncDeliversItsNotifications() {
        withEngine(dir, 10u) { e ->
            e.login(newUser(), "password")
            val rec = Recorder()
            e.setNotification(null, rec)
            val t0 = System.nanoTime()
            e.doSync()
            val got = rec.untilRunEnd()
            val ms = (System.nanoTime() - t0) / 1e6
            println(
                "BENCH full sync, page size 10 (42 pages): %d notifications in %.1f ms (%.2f ms each, HTTP + commit included)"
                    .format(got.size, ms, ms / got.size),
            )
        }
    }

    @Test
    fun aLocalWriteThroughTheBindings() {
        var round = 0
        fun fresh(): Engine = openEngine(dir.resolve("r${round++}").also { it.toFile().mkdirs() })
        fun attrs(i: Int) = mapOf("first" to "First $i", "last" to "Last $i", "email" to "user$i@example.com", "n" to "$i")

        // Warm-up.
        fresh().let { e ->
            repeat(200) { e.create("Customer", attrs(it)) }
            e.createObjects("Customer", (1..2000).map(::attrs))
            e.shutdown(); e.close()
        }
        val single = (1..3).map {
            val e = fresh()
            val n = 1_000
            val t0 = System.nanoTime()
            for (i in 1..n) e.create("Customer", attrs(i))
            val us = (System.nanoTime() - t0) / 1000.0 / n
            e.shutdown(); e.close()
            us
        }
        report("create, one call and one transaction per object", single, "object")
        for (batch in listOf(100, 1_000, 10_000)) {
            val rounds = (1..3).map {
                val e = fresh()
                val items = (1..batch).map(::attrs)
                val t0 = System.nanoTime()
                val made = e.createObjects("Customer", items)
                val us = (System.nanoTime() - t0) / 1000.0 / batch
                check(made.size == batch)
                e.shutdown(); e.close()
                us
            }
            report("createObjects, batch of $batch (one call, one transaction)", rounds, "object")
        }
        val updates = (1..3).map {
            val e = fresh()
            val made = e.createObjects("Customer", (1..1_000).map(::attrs))
            val t0 = System.nanoTime()
            e.updateObjects("Customer", made.map { ObjectUpdate(it.id, mapOf("last" to "Changed")) })
            val us = (System.nanoTime() - t0) / 1000.0 / made.size
            e.shutdown(); e.close()
            us
        }
        report("updateObjects, batch of 1000", updates, "object")
        val finds = (1..3).map {
            val e = fresh()
            val made = e.createObjects("Customer", (1..1_000).map(::attrs))
            val t0 = System.nanoTime()
            for (o in made) check(e.find("Customer", o.id) != null)
            val us = (System.nanoTime() - t0) / 1000.0 / made.size
            e.shutdown(); e.close()
            us
        }
        report("find by id, one call per object (read)", finds, "object")
        val calls = (1..3).map {
            val e = fresh()
            val n = 100_000
            var sum = 0L
            val t0 = System.nanoTime()
            for (i in 1..n) sum += e.pageSize().toLong()
            val us = (System.nanoTime() - t0) / 1000.0 / n
            check(sum > 0)
            e.shutdown(); e.close()
            us
        }
        report("pageSize(), a call without I/O (the FFI call's own cost)", calls, "call")
    }
}
