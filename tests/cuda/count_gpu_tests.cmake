# Meta-test: `ctest -N -L gpu` must list exactly EXPECT tests, each with the skip code 77 wired.
execute_process(COMMAND ${CTEST} -N -L gpu WORKING_DIRECTORY ${DIR} OUTPUT_VARIABLE out
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ctest -N -L gpu failed (${rc}): ${out}")
endif()
string(REGEX MATCH "Total Tests: ([0-9]+)" m "${out}")
if(NOT CMAKE_MATCH_1 EQUAL EXPECT)
  message(FATAL_ERROR "expected ${EXPECT} GPU tests labelled gpu, ctest lists ${CMAKE_MATCH_1}:\n${out}")
endif()
execute_process(COMMAND ${CTEST} --show-only=json-v1 -L gpu WORKING_DIRECTORY ${DIR}
                OUTPUT_VARIABLE json)
string(REGEX MATCHALL "\"SKIP_RETURN_CODE\"[^}]*\"value\" : 77" skips "${json}")
list(LENGTH skips nskip)
if(NOT nskip EQUAL EXPECT)
  message(FATAL_ERROR "${nskip} of ${EXPECT} GPU tests have SKIP_RETURN_CODE 77:\n${json}")
endif()
message(STATUS "${EXPECT} GPU tests registered, each skipping with 77 without a device")
