# CUDA backend (src/cuda): ORIGAMI_CUDA=ON requires the toolkit, OFF skips it, AUTO builds it when
# nvcc is found (on PATH, in CUDACXX, or in /usr/local/cuda). Sets ORIGAMI_WITH_CUDA.
# Binaries link the shared CUDA runtime and cuBLASLt, never the driver library (libcuda), so they
# load and skip cleanly on a machine without a driver.
set(ORIGAMI_WITH_CUDA OFF)
if(NOT ORIGAMI_CUDA MATCHES "^(ON|OFF|AUTO)$")
  message(FATAL_ERROR "ORIGAMI_CUDA=${ORIGAMI_CUDA}: expected ON, OFF or AUTO")
endif()
if(NOT ORIGAMI_CUDA STREQUAL "OFF")
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX}
     AND EXISTS /usr/local/cuda/bin/nvcc)
    set(ENV{CUDACXX} /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(ORIGAMI_WITH_CUDA ON)
  elseif(ORIGAMI_CUDA STREQUAL "ON")
    message(FATAL_ERROR "ORIGAMI_CUDA=ON but no CUDA compiler was found (set CUDACXX)")
  else()
    message(STATUS "CUDA backend: off (no nvcc found)")
  endif()
endif()

if(ORIGAMI_WITH_CUDA)
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90a)  # Hopper (H100/H200); `native` would need a GPU
  endif()
  set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 knows no CUDA20 dialect for nvcc 13
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  message(STATUS "CUDA backend: on (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, sm ${CMAKE_CUDA_ARCHITECTURES})")
  file(GLOB ORIGAMI_CUDA_SRC CONFIGURE_DEPENDS src/cuda/*.cpp src/cuda/*.cu)
  # NCCL (optional inside the CUDA build): the toolkit folder or the system's.
  find_path(NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(NCCL_LIB nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(NCCL_INCLUDE AND NCCL_LIB)
    set(ORIGAMI_WITH_NCCL ON)
    message(STATUS "NCCL: ${NCCL_LIB}")
  else()
    set(ORIGAMI_WITH_NCCL OFF)
    list(FILTER ORIGAMI_CUDA_SRC EXCLUDE REGEX "nccl_comm\\.cpp$")
    message(STATUS "NCCL: not found (the nccl communicator is not built)")
  endif()
  add_library(origami_cuda STATIC ${ORIGAMI_CUDA_SRC})
  target_link_libraries(origami_cuda PUBLIC origami_lib CUDA::cudart CUDA::cublasLt)
  if(ORIGAMI_WITH_NCCL)
    target_include_directories(origami_cuda PUBLIC ${NCCL_INCLUDE})
    target_link_libraries(origami_cuda PUBLIC ${NCCL_LIB})
    target_compile_definitions(origami_cuda PUBLIC ORIGAMI_WITH_NCCL=1)
  endif()
  # Device code: every warning an error, and register spills or local memory count as warnings.
  target_compile_options(origami_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xptxas=-warn-spills,-warn-lmem-usage,-Werror
                               -Xcompiler=-Wall,-Wextra>)
  target_compile_definitions(origami_cuda PUBLIC ORIGAMI_WITH_CUDA=1)
endif()
