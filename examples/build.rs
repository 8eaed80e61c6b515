//! Generates the gRPC server and client of the tonic example's `Items`
//! service with `tonic_build::manual`: the messages are plain Rust structs
//! with `prost` derives (`items_grpc.rs`), so there is no `.proto` file and
//! no `protoc` to install or vendor.

fn main() {
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic_prost::ProstCodec")
            .build()
    };
    let items = tonic_build::manual::Service::builder()
        .name("Items")
        .package("slotguard.items")
        .method(method(
            "get",
            "Get",
            "super::GetRequest",
            "super::GetResponse",
        ))
        .method(method(
            "put",
            "Put",
            "super::PutRequest",
            "super::PutResponse",
        ))
        .build();
    tonic_build::manual::Builder::new().compile(&[items]);
}
