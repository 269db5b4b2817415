# Sequence ops (dgrad/ops_seq.h, core/src/ops_seq.c, core/src/cpu/seq_cpu.c)
# and modules (dgrad/nn_seq.h, core/src/nn/seq.c). Included from
# tests/CMakeLists.txt.
#  - test_seq_ref: every op and the LSTM / GRU / MultiheadAttention modules,
#    forward and backward, against PyTorch 1.13 (fixtures/seq.txt from
#    fixtures/make_seq_fixtures.py), and bad input (messages checked);
#  - test_seq_gradcheck: central-difference gradient checks of every op
#    and of the recurrent layer op (dg__rnn_layer), variable lengths.
dg_add_test(test_seq_ref test_seq_ref.c)
dg_add_test(test_seq_gradcheck test_seq_gradcheck.c)
target_include_directories(test_seq_gradcheck PRIVATE ${PROJECT_SOURCE_DIR}/core/src)

# The sequence examples on a subset: they learn, the ViT with LayerDrop
# agrees across 2 ranks and resumes exactly, bad flags are refused.
if(DG_MNIST_DIR)
  find_program(DG_SEQ_MPIEXEC NAMES mpiexec mpirun)
  set(seq_mpi "")
  if(DG_HAVE_MPI AND DG_SEQ_MPIEXEC)
    set(seq_mpi ${DG_SEQ_MPIEXEC})
  endif()
  if(DG_SANITIZE)
    set(seq_n 1280)
    set(seq_min 0.15)
  else()
    set(seq_n 6400)
    set(seq_min 0.60)
  endif()
  add_test(NAME mnist_seq_subset
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_mnist_seq.sh $<TARGET_FILE:mnist_lstm>
                   $<TARGET_FILE:mnist_vit> ${DG_MNIST_DIR} ${seq_n} ${seq_min} ${seq_mpi})
  set_tests_properties(mnist_seq_subset PROPERTIES TIMEOUT 600 PASS_REGULAR_EXPRESSION "^passed|\npassed"
                       FAIL_REGULAR_EXPRESSION "FAIL")
endif()
