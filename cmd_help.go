package main

import (
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"upgradectl/host"
)

func init() {
	register(&cli.Command{
		Name:      "help",
		Usage:     "show the commands, or how to use one (help iso stage)",
		ArgsUsage: "[COMMAND...]",
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) == 0 {
				return cli.ShowAppHelp(c)
			}
			cmds := c.App.Commands
			names := []string{c.App.Name}
			var found *cli.Command
			for i, a := range args {
				found = findCommand(cmds, a)
				if found == nil {
					return host.WithHint(host.Usage("unknown command %q", strings.Join(args[:i+1], " ")), "see 'upgradectl help'")
				}
				cmds = found.Subcommands
				names = append(names, found.Name)
			}
			// A group's own --help, as 'upgradectl COMMAND --help' (the
			// parser gives every command it runs a help subcommand).
			if slices.ContainsFunc(found.Subcommands, func(s *cli.Command) bool { return s.Name != "help" }) {
				return c.App.Run(append(append([]string{c.App.Name}, args...), "--help"))
			}
			// A command's help, printed without running it: tag exec
			// takes --help as the command to run.
			found.HelpName = strings.Join(names, " ")
			cli.HelpPrinter(c.App.Writer, cli.CommandHelpTemplate, found)
			return nil
		},
	})
}
