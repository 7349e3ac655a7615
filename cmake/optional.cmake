# optional.cmake - extra dependencies of the later layers, one block per module.

# tokenizer: libutf8proc (Unicode normalization: NFC/NFD/NFKC/NFKD); see docs/TOKENIZER.md.
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
target_link_libraries(neox_obj PUBLIC PkgConfig::UTF8PROC)
target_link_libraries(neox_static PUBLIC PkgConfig::UTF8PROC)
target_link_libraries(neox_shared PUBLIC PkgConfig::UTF8PROC)

# train (data parallelism): MPI, for `mpirun -np N neox train` (docs/DISTRIBUTED.md). On by
# default when an MPI C library is found (Debian: libopenmpi-dev); without it the library
# builds the same trainer for one process, and refuses to run under an MPI launcher.
find_package(MPI COMPONENTS C QUIET)
option(NX_MPI "Build data-parallel training on MPI" ${MPI_C_FOUND})
if(NX_MPI)
  if(NOT MPI_C_FOUND)
    message(FATAL_ERROR "NX_MPI=ON but no MPI C library was found (install libopenmpi-dev, or pass -DNX_MPI=OFF)")
  endif()
  target_compile_definitions(neox_obj PRIVATE NX_HAVE_MPI=1)
  target_link_libraries(neox_obj PUBLIC MPI::MPI_C)
  target_link_libraries(neox_static PUBLIC MPI::MPI_C)
  target_link_libraries(neox_shared PUBLIC MPI::MPI_C)
  message(STATUS "neox: MPI data parallelism enabled")
else()
  message(STATUS "neox: built without MPI (single-process training only)")
endif()
