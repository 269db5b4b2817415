# libdgrad_train's API and the dataset interface: bad input, the flag
# table, the CSV loader, a custom dataset.
add_executable(test_train_api ${CMAKE_CURRENT_SOURCE_DIR}/test_train_api.c)
target_link_libraries(test_train_api PRIVATE dgrad_train m)
add_test(NAME test_train_api COMMAND test_train_api)
set_tests_properties(test_train_api PROPERTIES TIMEOUT 120)
