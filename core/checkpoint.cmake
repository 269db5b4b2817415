# Checkpoints (core/src/checkpoint.c, which the directory's glob adds).
# With protobuf-c, proto/dg_checkpoint.proto is generated at build time with
# protoc-c and compiled into dgrad; without it, the checkpoint functions
# report "built without protobuf-c".
if(DG_HAVE_PROTOBUF)
  set(DG_CKPT_PROTO ${CMAKE_CURRENT_SOURCE_DIR}/proto/dg_checkpoint.proto)
  set(DG_CKPT_GEN_DIR ${CMAKE_CURRENT_BINARY_DIR}/proto)
  add_custom_command(
    OUTPUT ${DG_CKPT_GEN_DIR}/dg_checkpoint.pb-c.c ${DG_CKPT_GEN_DIR}/dg_checkpoint.pb-c.h
    COMMAND ${CMAKE_COMMAND} -E make_directory ${DG_CKPT_GEN_DIR}
    COMMAND ${PROTOC_C} --proto_path=${CMAKE_CURRENT_SOURCE_DIR}/proto
            --c_out=${DG_CKPT_GEN_DIR} ${DG_CKPT_PROTO}
    DEPENDS ${DG_CKPT_PROTO}
    COMMENT "protoc-c: dg_checkpoint.proto"
    VERBATIM)
  target_sources(dgrad PRIVATE ${DG_CKPT_GEN_DIR}/dg_checkpoint.pb-c.c ${DG_CKPT_GEN_DIR}/dg_checkpoint.pb-c.h)
  set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/src/checkpoint.c PROPERTIES
    COMPILE_DEFINITIONS DG_CHECKPOINT_HAVE_PROTOBUF=1
    INCLUDE_DIRECTORIES ${DG_CKPT_GEN_DIR}
    OBJECT_DEPENDS ${DG_CKPT_GEN_DIR}/dg_checkpoint.pb-c.h)
  target_link_libraries(dgrad PRIVATE PkgConfig::PROTOBUFC)
endif()
