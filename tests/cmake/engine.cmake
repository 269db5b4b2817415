# Engine tests: results against PyTorch fixtures (tests/fixtures, regenerate
# with tests/fixtures/make_fixtures.py), finite-difference gradient checks
# and autograd semantics.
dg_add_test(test_torch_ref test_torch_ref.c)
dg_add_test(test_gradcheck test_gradcheck.c)
