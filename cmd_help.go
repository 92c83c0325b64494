package main

import (
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
			for i, a := range args {
				found := findCommand(cmds, a)
				if found == nil {
					return host.WithHint(host.Usage("unknown command %q", strings.Join(args[:i+1], " ")), "see 'upgradectl help'")
				}
				cmds = found.Subcommands
			}
			// The command's own --help, as 'upgradectl COMMAND --help'.
			return c.App.Run(append(append([]string{c.App.Name}, args...), "--help"))
		},
	})
}
