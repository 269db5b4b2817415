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
