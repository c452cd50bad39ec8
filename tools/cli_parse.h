// cli_parse: command-line parsing for the three tools, with one convention
// for usage errors: "PROGRAM: what is wrong", a hint, exit status 2 (as for a
// bad configuration), where CLI11 alone would print its own wording and exit
// with its internal codes (105-120). --help and --version still exit 0.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <optional>

namespace ringmail::tools {

// Parses argv into app. Returns the exit status to end with, or nothing to
// go on.
inline std::optional<int> parse_command_line(CLI::App& app, const char* program, int argc, char** argv) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {
        return app.exit(e);  // --help, --version: printed, status 0
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "%s: %s\nRun with --help for the options.\n", program, e.what());
        return 2;
    }
    return std::nullopt;
}

}  // namespace ringmail::tools
