# optional.cmake - extra dependencies of the later layers, one block per module.

# tokenizer: libutf8proc (Unicode normalization: NFC/NFD/NFKC/NFKD); see docs/TOKENIZER.md.
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
target_link_libraries(neox_obj PUBLIC PkgConfig::UTF8PROC)
target_link_libraries(neox_static PUBLIC PkgConfig::UTF8PROC)
target_link_libraries(neox_shared PUBLIC PkgConfig::UTF8PROC)
