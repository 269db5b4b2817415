# TensorBoard summaries (core/src/summary.c, which the directory's glob adds).
# With protobuf-c, the Event messages of proto/dg_event.proto are generated
# at build time with protoc-c and compiled into dgrad; without it,
# summary.c's writer reports "built without protobuf-c".
if(DG_HAVE_PROTOBUF)
  set(DG_EVENT_PROTO ${CMAKE_CURRENT_SOURCE_DIR}/proto/dg_event.proto)
  set(DG_EVENT_GEN_DIR ${CMAKE_CURRENT_BINARY_DIR}/proto)
  add_custom_command(
    OUTPUT ${DG_EVENT_GEN_DIR}/dg_event.pb-c.c ${DG_EVENT_GEN_DIR}/dg_event.pb-c.h
    COMMAND ${CMAKE_COMMAND} -E make_directory ${DG_EVENT_GEN_DIR}
    COMMAND ${PROTOC_C} --proto_path=${CMAKE_CURRENT_SOURCE_DIR}/proto
            --c_out=${DG_EVENT_GEN_DIR} ${DG_EVENT_PROTO}
    DEPENDS ${DG_EVENT_PROTO}
    COMMENT "protoc-c: dg_event.proto"
    VERBATIM)
  target_sources(dgrad PRIVATE ${DG_EVENT_GEN_DIR}/dg_event.pb-c.c ${DG_EVENT_GEN_DIR}/dg_event.pb-c.h)
  set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/src/summary.c PROPERTIES
    COMPILE_DEFINITIONS DG_SUMMARY_HAVE_PROTOBUF=1
    INCLUDE_DIRECTORIES ${DG_EVENT_GEN_DIR}
    OBJECT_DEPENDS ${DG_EVENT_GEN_DIR}/dg_event.pb-c.h)
  target_link_libraries(dgrad PRIVATE PkgConfig::PROTOBUFC)
endif()
