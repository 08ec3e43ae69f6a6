/*
 * Custos test support: an in-JVM Elasticsearch node whose plugins come from the classpath.
 *
 * This class lives in org.elasticsearch.node because NodeConstruction and NodeServiceProvider are
 * package-private. We do not use the test framework's MockNode directly: its constructor touches
 * ESTestCase, whose static initialiser installs test-only machinery (paranoid Netty leak detection,
 * a test security policy, randomized seeds). Everything else here is the production Node; the only
 * difference is where plugin classes are found (MockPluginsService: classpath instead of plugin dirs).
 */
package org.elasticsearch.node;

import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.MockPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

import java.util.Collection;

public class CustosNode extends Node {

    public CustosNode(Environment environment, Collection<Class<? extends Plugin>> classpathPlugins) {
        super(NodeConstruction.prepareConstruction(environment, null, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment env, PluginsLoader pluginsLoader) {
                return new MockPluginsService(env.settings(), env, classpathPlugins);
            }
        }, true));
    }
}
