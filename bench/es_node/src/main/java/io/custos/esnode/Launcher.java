/*
 * Starts one real single-node Elasticsearch cluster inside this JVM, bound to 127.0.0.1.
 *
 *   java @classpath-args io.custos.esnode.Launcher --http-port 9200 --transport-port 9300 --dir /tmp/es1
 *        [--cluster-name custos-test] [--node-name NAME] [-E key=value ...]
 *
 * The directory holds data/, logs/ and home/ (path.home: config dir, empty plugin dirs); starting again
 * with the same --dir and ports reopens the same cluster state and indices. SIGTERM/SIGINT close the
 * node gracefully (flush, release the data dir lock); SIGKILL is a crash the node recovers from.
 * One line "custos-es-node started http=HOST:PORT ..." goes to stdout once the HTTP port is bound.
 */
package io.custos.esnode;

import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.http.HttpServerTransport;
import org.elasticsearch.node.CustosNode;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.transport.netty4.Netty4Plugin;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public final class Launcher {

    private Launcher() {}

    // The distribution loads these from modules/; here they come from the classpath.
    static final List<Class<? extends Plugin>> PLUGINS = List.of(Netty4Plugin.class);

    public static void main(String[] args) throws Exception {
        final Map<String, String> opts = new LinkedHashMap<>();
        final Map<String, String> extra = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            final String a = args[i];
            if (a.equals("-h") || a.equals("--help")) {
                System.out.println(
                    "usage: Launcher --http-port P --transport-port T --dir DIR [--cluster-name N] [--node-name N] [-E k=v ...]"
                );
                return;
            }
            if (i + 1 >= args.length) {
                usage("missing value after " + a);
            }
            final String v = args[++i];
            if (a.equals("-E")) {
                final int eq = v.indexOf('=');
                if (eq <= 0) {
                    usage("-E expects key=value, got '" + v + "'");
                }
                extra.put(v.substring(0, eq), v.substring(eq + 1));
            } else if (a.startsWith("--")) {
                opts.put(a.substring(2), v);
            } else {
                usage("unexpected argument '" + a + "'");
            }
        }
        for (String required : List.of("http-port", "transport-port", "dir")) {
            if (opts.containsKey(required) == false) {
                usage("--" + required + " is required");
            }
        }
        final Path dir = Path.of(opts.get("dir")).toAbsolutePath();
        final Path home = dir.resolve("home");
        // path.home must contain config/, plugins/ and modules/ (empty: our plugins are on the classpath).
        for (String sub : List.of("config", "plugins", "modules")) {
            Files.createDirectories(home.resolve(sub));
        }
        Files.createDirectories(dir.resolve("logs"));
        // Logs go to stdout (the Python wrapper writes it to $CUSTOS_TEST_LOGS); regenerated every start.
        Files.writeString(home.resolve("config").resolve("log4j2.properties"), LOG4J2);
        final String httpPort = opts.get("http-port");
        final String clusterName = opts.getOrDefault("cluster-name", "custos-test");
        final String nodeName = opts.getOrDefault("node-name", httpPort.equals("0") ? "custos-es" : "custos-es-" + httpPort);

        final Settings.Builder sb = Settings.builder()
            .put("cluster.name", clusterName)
            .put("node.name", nodeName)
            .put("path.home", home.toString())
            .put("path.data", dir.resolve("data").toString())
            .put("path.logs", dir.resolve("logs").toString())
            // Lets tests register an "fs" snapshot repository under DIR/snapshots.
            .put("path.repo", dir.resolve("snapshots").toString())
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", opts.get("transport-port"))
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            .put("discovery.type", "single-node")
            // A shared CI disk above 90% must not flip test indices to read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // Tests clean up with wildcards (DELETE /custos-*).
            .put("action.destructive_requires_name", false)
            // Writes ports files into logs/ so callers can find ports chosen by the OS (port 0).
            .put("node.portsfile", true);
        extra.forEach(sb::put);
        final Settings settings = sb.build();

        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(nodeName);
        LogConfigurator.setClusterName(clusterName);
        final Environment env = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), home.resolve("config"), () -> nodeName);
        LogConfigurator.configure(env, true);

        final Node node;
        try {
            node = new CustosNode(env, PLUGINS);
        } catch (Exception e) {
            fail(e);
            return;
        }
        node.injector()
            .getInstance(RestController.class)
            .registerHandler(new RootInfoHandler(nodeName, node.injector().getInstance(ClusterService.class)));
        final CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.prepareForClose();
                node.close();
                if (node.awaitClose(30, TimeUnit.SECONDS) == false) {
                    System.err.println("custos-es-node: node did not close within 30s");
                }
            } catch (IOException | InterruptedException | RuntimeException e) {
                System.err.println("custos-es-node: error while closing: " + e);
            } finally {
                closed.countDown();
            }
        }, "custos-es-node-shutdown"));

        try {
            node.start();
        } catch (Exception e) {
            fail(e); // the shutdown hook closes the half-started node
            return;
        }
        final HttpServerTransport http = node.injector().getInstance(HttpServerTransport.class);
        System.out.println(
            "custos-es-node started http=" + http.boundAddress().publishAddress() + " cluster=" + clusterName + " node=" + nodeName
                + " data=" + dir.resolve("data")
        );
        System.out.flush();
        closed.await();
    }

    private static final String LOG4J2 = String.join(
        "\n",
        "status = error",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n",
        "rootLogger.level = ${sys:es.logger.level:-info}",
        "rootLogger.appenderRef.console.ref = console",
        ""
    );

    /** One line naming the root cause (e.g. a port in use), which the Python wrapper surfaces, then exit 1. */
    private static void fail(Exception e) {
        final StringBuilder reason = new StringBuilder(String.valueOf(e));
        for (Throwable cause = e.getCause(); cause != null && cause != cause.getCause(); cause = cause.getCause()) {
            reason.append(" <- caused by: ").append(cause);
        }
        System.err.println("custos-es-node: failed to start: " + reason);
        e.printStackTrace();
        System.exit(1);
    }

    private static void usage(String message) {
        System.err.println("custos-es-node: " + message);
        System.exit(2);
    }
}
