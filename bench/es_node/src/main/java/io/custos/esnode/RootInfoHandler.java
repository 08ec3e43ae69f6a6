/*
 * GET / and HEAD / ("info" / "ping"), which the distribution serves from its rest-root module.
 * That module is not published to Maven Central, so the launcher registers this small equivalent
 * directly on the node's RestController (no plugin: the plugin REST API differs between 8.x and 9.x,
 * this way one source builds against both). elasticsearch-py's info()/ping() read it.
 */
package io.custos.esnode;

import org.apache.lucene.util.Version;
import org.elasticsearch.Build;
import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.bytes.BytesArray;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.xcontent.XContentBuilder;

import java.util.List;

final class RootInfoHandler extends BaseRestHandler {
    private final String nodeName;
    private final ClusterService clusterService;

    RootInfoHandler(String nodeName, ClusterService clusterService) {
        this.nodeName = nodeName;
        this.clusterService = clusterService;
    }

    @Override
    public String getName() {
        return "custos_root_info";
    }

    @Override
    public List<Route> routes() {
        return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
    }

    @Override
    protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
        if (request.method() == RestRequest.Method.HEAD) {
            return channel -> channel.sendResponse(new RestResponse(RestStatus.OK, RestResponse.TEXT_CONTENT_TYPE, BytesArray.EMPTY));
        }
        return channel -> {
            final Build build = Build.current();
            final XContentBuilder b = channel.newBuilder();
            b.startObject();
            b.field("name", nodeName);
            b.field("cluster_name", clusterService.getClusterName().value());
            b.field("cluster_uuid", clusterService.state().metadata().clusterUUID());
            b.startObject("version")
                .field("number", build.qualifiedVersion())
                .field("build_flavor", build.flavor())
                .field("build_type", build.type().displayName())
                .field("build_hash", build.hash())
                .field("build_date", build.date())
                .field("build_snapshot", build.isSnapshot())
                .field("lucene_version", Version.LATEST.toString())
                .field("minimum_wire_compatibility_version", build.minWireCompatVersion())
                .field("minimum_index_compatibility_version", build.minIndexCompatVersion())
                .endObject();
            b.field("tagline", "You Know, for Search");
            b.endObject();
            channel.sendResponse(new RestResponse(RestStatus.OK, b));
        };
    }
}
